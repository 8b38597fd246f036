"""ConvertId (the version probe) and a minimal GetServerTimeZones."""

from __future__ import annotations

from lxml import etree

from .engine_ctx import TP, Ctx, E, M, MsgError, Unit
from .xmlio import WINDOWS_ZONES


def convert_id(ctx: Ctx, req: etree._Element) -> tuple[list[Unit], str | None]:
    # The sandbox has no alternate id formats; exchangelib's probe only reads the header.
    ids = list(req.iterfind(f"{M}SourceIds/*"))
    return [lambda: ctx.error(MsgError("ErrorInvalidIdMalformed")) for _ in ids], None


def get_server_time_zones(ctx: Ctx, req: etree._Element) -> tuple[list[Unit], str | None]:
    wanted = [el.text for el in req.iterfind(f"{M}Ids/{TP}Id")]

    def one() -> etree._Element:
        msg = ctx.message()
        box = E(M + "TimeZoneDefinitions", msg)
        for zid, (_, name) in WINDOWS_ZONES.items():
            if wanted and zid not in wanted:
                continue
            E(TP + "TimeZoneDefinition", box, Id=zid, Name=name)
        return msg

    return [one], None
