"""Meters that call in: pushes (DataNotification, EventNotification) over the TCP or UDP
wrapper and HDLC over TCP, and work done over the connection an inbound meter opens.

sans-IO core: `framing` (bytes to APDUs), `unwrap` (block transfer, ciphering, the
notification), `directory` (who sent it), `mapping` (push to readings and events), `guard`
(counting and alarming bad input once per sender and window). asyncio edges: `server`
(the TCP and UDP servers), `handler` (what a push does to storage and MQTT), `inbound` (due
work over a meter's own connection)."""
