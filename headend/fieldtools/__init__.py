"""Field tools: what a field engineer runs on a bench or at a meter, beside the daemon.

`decode` turns a captured byte stream into values (sans-IO, pure); `probe` finds what a meter
speaks and `scan` which HDLC addresses answer on a bus (asyncio edges over drivers/)."""
