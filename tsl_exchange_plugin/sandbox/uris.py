"""xs:anyURI as Exchange checks it, which is stricter than libxml2.

libxml2, the sandbox's schema validator, accepts nearly any string as xs:anyURI: it escapes what
a URI may not hold and parses the rest. Exchange validates requests with .NET's XmlSchema, whose
anyURI check is ``XmlConvert.ToUri``: the whitespace-trimmed value must not be blank or contain
"##", and ``Uri.TryCreate(value, UriKind.RelativeOrAbsolute)`` must accept it. .NET reads a value
that begins with a scheme it knows (http, https, ftp, ...) as an absolute URI and then demands
a valid host and port ("http://www.kanzlei müller.de" fails: "Invalid URI: The hostname could not
be parsed"); any other value may stand as a relative reference ("www.kanzlei.de"). A failed
check is a schema error for the whole request (ErrorSchemaValidation, as for every other
schema type), worded the way .NET words it.

This is an approximation of .NET's parser for the values a contact's website holds, not a port
of it; it errs on the side of refusing broken hosts and ports.
"""

from __future__ import annotations

import ipaddress
import re

_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*):")
# Schemes .NET knows to have an authority ("//host:port"): their host and port are parsed.
_AUTHORITY_SCHEMES = frozenset({"http", "https", "ftp", "ws", "wss", "gopher", "nntp", "news", "ldap"})
_HOST_LABEL = re.compile(r"[\w-]+")  # letters of any script, digits, "-" and "_"


def is_valid_any_uri(value: str) -> bool:
    text = value.strip(" \t\r\n")
    if value and not text:
        return False
    if "##" in text:
        return False
    match = _SCHEME.match(text)
    if match is None or len(match.group(1)) == 1:  # "c:\\..." is a Windows path, which .NET accepts
        return True
    scheme = match.group(1).lower()
    if scheme not in _AUTHORITY_SCHEMES:
        return True
    rest = text[match.end() :]
    if not rest.startswith("//"):
        return False
    authority = re.split(r"[/?#]", rest[2:], maxsplit=1)[0]
    return _valid_authority(authority)


def _valid_authority(authority: str) -> bool:
    host_port = authority.rpartition("@")[2]
    if host_port.startswith("["):
        end = host_port.find("]")
        if end < 0:
            return False
        try:
            ipaddress.IPv6Address(host_port[1:end])
        except ValueError:
            return False
        host, port = "", host_port[end + 1 :]
        if port and not port.startswith(":"):
            return False
        port = port[1:]
    else:
        host, _, port = host_port.partition(":")
        if not host:
            return False
        labels = host[:-1].split(".") if host.endswith(".") else host.split(".")
        if not all(_HOST_LABEL.fullmatch(label) for label in labels):
            return False
    if port and (not port.isascii() or not port.isdigit() or int(port) > 65535):
        return False
    return True


def dotnet_message(element: str, value: str) -> str:
    """How .NET's XmlSchema validation words an invalid anyURI value."""
    return (
        f"The request failed schema validation: The '{element}' element is invalid - The value "
        f"'{value}' is invalid according to its datatype 'http://www.w3.org/2001/XMLSchema:anyURI' - "
        f"The string '{value}' is not a valid Uri value."
    )
