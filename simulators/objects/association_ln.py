"""Association LN (class 15) 0.0.40.0.0.255: the current association, seen from inside it.

Most attributes describe the association a request arrives in (AssociationContext); the
object list is shared, built once per access level by the catalogue
(simulators/objects/catalogue.py), which hands its builder in so this module need not import it.
reply_to_HLS_authentication is answered by the session (simulators/association.py), which holds
the challenges and keys; reaching this object's method 1 otherwise is refused."""

from __future__ import annotations

from collections.abc import Callable

from cosem_objects.apdu.common import ActionResult, SelectiveAccess
from cosem_objects.classes import AssociationLN, Obises
from cosem_objects.data import Data
from simulators.objects.model import (
    AccessLevel,
    AssociationContext,
    AttributeDef,
    CosemObject,
    Meter,
    MethodDef,
)
from simulators.objects.registers import logical_name_attribute

_DEFAULT = AssociationContext()
APPLICATION_CONTEXT_PREFIX = bytes.fromhex("608574050801")
MECHANISM_PREFIX = bytes.fromhex("608574050802")


def _context(ctx: AssociationContext | None) -> AssociationContext:
    return ctx if ctx is not None else _DEFAULT


def _partners(_m: Meter, ctx: AssociationContext | None, _a: SelectiveAccess | None) -> Data:
    context = _context(ctx)
    return Data.structure(
        [Data.integer(context.client_sap), Data.long_unsigned(context.server_sap)]
    )


def _application_context(
    _m: Meter, ctx: AssociationContext | None, _a: SelectiveAccess | None
) -> Data:
    return Data.octet_string(
        APPLICATION_CONTEXT_PREFIX + bytes((_context(ctx).application_context,))
    )


def _xdlms_context(_m: Meter, ctx: AssociationContext | None, _a: SelectiveAccess | None) -> Data:
    context = _context(ctx)
    bits = "".join(f"{byte:08b}" for byte in context.conformance)
    return Data.structure(
        [
            Data.bit_string(bits),
            Data.long_unsigned(context.server_max_pdu),
            Data.long_unsigned(min(context.client_max_pdu, context.server_max_pdu)),
            Data.unsigned(context.dlms_version),
            Data.integer(0),
            Data.octet_string(b""),
        ]
    )


def _mechanism(_m: Meter, ctx: AssociationContext | None, _a: SelectiveAccess | None) -> Data:
    return Data.octet_string(MECHANISM_PREFIX + bytes((_context(ctx).mechanism,)))


def _status(_m: Meter, ctx: AssociationContext | None, _a: SelectiveAccess | None) -> Data:
    return Data.enum(_context(ctx).status)


def _security_setup(_m: Meter, _c: AssociationContext | None, _a: SelectiveAccess | None) -> Data:
    return Data.octet_string(Obises.SECURITY_SETUP.to_bytes())


def _not_here(
    _m: Meter, _ctx: AssociationContext | None, _params: Data | None
) -> tuple[ActionResult, Data | None]:
    # Only meaningful while an HLS association is pending; the session handles that case.
    return ActionResult.READ_WRITE_DENIED, None


def _secret(_m: Meter, _c: AssociationContext | None, _a: SelectiveAccess | None) -> Data:
    return Data.octet_string(b"")  # never readable: access level None below


def association_object(object_list: Callable[[AccessLevel], Data]) -> CosemObject:
    """The current association object; `object_list(level)` gives attribute 2."""
    p = AccessLevel.PUBLIC
    return CosemObject(
        class_id=AssociationLN.CLASS_ID,
        version=AssociationLN.VERSION,
        obis=Obises.CURRENT_ASSOCIATION,
        attributes={
            1: logical_name_attribute(Obises.CURRENT_ASSOCIATION, p),
            AssociationLN.OBJECT_LIST: AttributeDef(
                p, lambda _m, ctx, _a: object_list(_context(ctx).level)
            ),
            AssociationLN.ASSOCIATED_PARTNERS_ID: AttributeDef(p, _partners),
            AssociationLN.APPLICATION_CONTEXT_NAME: AttributeDef(p, _application_context),
            AssociationLN.XDLMS_CONTEXT_INFO: AttributeDef(p, _xdlms_context),
            AssociationLN.AUTHENTICATION_MECHANISM_NAME: AttributeDef(p, _mechanism),
            AssociationLN.SECRET: AttributeDef(None, _secret),
            AssociationLN.ASSOCIATION_STATUS: AttributeDef(p, _status),
            AssociationLN.SECURITY_SETUP_REFERENCE: AttributeDef(p, _security_setup),
        },
        methods={AssociationLN.REPLY_TO_HLS_AUTHENTICATION: MethodDef(p, _not_here)},
    )
