"""The QGIS proxy settings (Settings > Options > Network) as plain data for the engine.

The engine makes its own HTTP requests (requests for STAC, libcurl inside GDAL for the COGs),
not through QGIS's network manager, so the proxy QGIS uses is read here and handed to it as
`SearchParams.proxy` ("http://[user:password@]host:port") and `SearchParams.no_proxy` (the
excluded hosts, "a.org,b.net"). The password stays in memory: the parameters never write
these two fields (core.output.params_summary leaves them out, core.redact strips userinfo).

What is honoured: an HTTP proxy (types HttpProxy and HttpCachingProxy) with its user and
password, and the excluded URLs / no-proxy URLs as host names. "DefaultProxy" (the system's)
and no proxy set leave the engine as it is: requests and libcurl read the HTTP_PROXY,
HTTPS_PROXY and NO_PROXY environment variables themselves. SOCKS5 and FTP proxies and a
proxy auth configuration (proxy/authcfg) are not applied.
"""

from __future__ import annotations

from typing import Any, Iterable, List, Optional, Tuple
from urllib.parse import quote, urlsplit

from qgis.core import QgsSettings

HTTP_TYPES = ("HttpProxy", "HttpCachingProxy")


def _flag(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("true", "1", "yes")
    return bool(value)


def _strings(value: Any) -> List[str]:
    """A settings list: a QStringList, a "|"-joined string (older QGIS) or nothing."""
    if value is None:
        return []
    items: Iterable[Any] = value.split("|") if isinstance(value, str) else value
    return [str(v).strip() for v in items if str(v).strip()]


def _host(entry: str) -> str:
    """The host of an excluded URL ("https://a.org/path" -> "a.org"); a bare host as is."""
    if "://" in entry:
        try:
            return urlsplit(entry).hostname or ""
        except ValueError:
            return ""
    return entry.split("/", 1)[0].split(":", 1)[0]


def qgis_proxy(settings: Optional[QgsSettings] = None) -> Tuple[str, str]:
    """(proxy URL, excluded hosts) from QGIS's proxy settings; ("", "") when none applies."""
    s = settings if settings is not None else QgsSettings()
    if not _flag(s.value("proxy/proxyEnabled", False)):
        return "", ""
    kind = str(s.value("proxy/proxyType", "") or "")
    host = str(s.value("proxy/proxyHost", "") or "").strip()
    if kind not in HTTP_TYPES or not host:
        return "", ""
    try:
        port = int(s.value("proxy/proxyPort", 0) or 0)
    except (TypeError, ValueError):
        port = 0
    user = str(s.value("proxy/proxyUser", "") or "")
    password = str(s.value("proxy/proxyPassword", "") or "")
    auth = f"{quote(user, safe='')}:{quote(password, safe='')}@" if user else ""
    netloc = f"[{host}]" if ":" in host else host
    url = f"http://{auth}{netloc}" + (f":{port}" if port > 0 else "")
    excluded = _strings(s.value("proxy/proxyExcludedUrls", [])) + \
        _strings(s.value("proxy/noProxyUrls", []))
    hosts = []
    for entry in excluded:
        name = _host(entry)
        if name and name not in hosts:
            hosts.append(name)
    return url, ",".join(hosts)


def proxy_fields(settings: Optional[QgsSettings] = None) -> dict:
    """The two SearchParams fields, ready for `SearchParams(**..., **proxy_fields())`."""
    proxy, no_proxy = qgis_proxy(settings)
    return {"proxy": proxy, "no_proxy": no_proxy}
