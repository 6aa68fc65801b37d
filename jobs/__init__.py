"""Job types. Each module in this package registers its job types when imported."""

import importlib
import pkgutil

_INFRASTRUCTURE = {"registry", "context"}


def load_all() -> None:
    """Import every job module so that its ``@job_type`` registrations run."""
    for module in pkgutil.iter_modules(__path__):
        if module.name not in _INFRASTRUCTURE and not module.name.startswith("_"):
            importlib.import_module(f"{__name__}.{module.name}")


load_all()
