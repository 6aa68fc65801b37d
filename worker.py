"""``python worker.py``: the supervisor that runs one RQ worker per active lane on this host."""

from webapp import create_app
from webapp.lanes.supervisor import Supervisor


def main() -> None:
    app = create_app()
    Supervisor(app).run()


if __name__ == "__main__":
    main()
