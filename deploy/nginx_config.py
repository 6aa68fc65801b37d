r"""Write an nginx configuration for Lanes' web processes from ``deploy/nginx/lanes.conf.template``.

    python deploy/nginx_config.py --listen 127.0.0.1:8080 \
        --web 127.0.0.1:5001 --web 127.0.0.1:5002 --prefix /srv/lanes-nginx
    nginx -p /srv/lanes-nginx -c nginx.conf

Standard library only, so that it runs without Lanes' virtualenv.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

TEMPLATE = Path(__file__).resolve().parent / "nginx" / "lanes.conf.template"
# A web process that refused a connection is left out for this long before nginx tries it again.
FAIL_TIMEOUT_SECONDS = 5


def render(listen: str, web_servers: list[str]) -> str:
    """The configuration text: nginx on ``listen`` in front of ``web_servers`` (``host:port`` each)."""
    if not web_servers:
        raise ValueError("at least one web server (host:port) is needed")
    servers = "\n".join(
        f"        server {server} max_fails=1 fail_timeout={FAIL_TIMEOUT_SECONDS}s;" for server in web_servers
    )
    return TEMPLATE.read_text().replace("@LISTEN@", listen).replace("@WEB_SERVERS@", servers)


def write(prefix: Path, listen: str, web_servers: list[str]) -> Path:
    """Write ``prefix/nginx.conf`` and the folders it names; the path of the configuration."""
    for folder in ("logs", "temp"):
        (prefix / folder).mkdir(parents=True, exist_ok=True)
    # nginx's worker processes (user nobody when started as root) must reach temp/ (it chowns
    # the folders it creates there) and logs/.
    prefix.chmod(0o755)
    config = prefix / "nginx.conf"
    config.write_text(render(listen, web_servers))
    return config


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--listen", required=True, help="nginx's address, e.g. 127.0.0.1:8080")
    parser.add_argument("--web", action="append", required=True, metavar="HOST:PORT",
                        help="a web process (gunicorn); give it once per process")
    parser.add_argument("--prefix", required=True, type=Path, help="nginx's prefix folder (config, logs, temp)")
    arguments = parser.parse_args(argv)
    config = write(arguments.prefix.resolve(), arguments.listen, arguments.web)
    print(f"wrote {config}; start it with: nginx -p {arguments.prefix.resolve()} -c nginx.conf")
    return 0


if __name__ == "__main__":
    sys.exit(main())
