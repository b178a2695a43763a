"""Joining Ray: one place for how captchalab connects to a cluster (solve --engine ray, generate --engine ray)."""

from __future__ import annotations

from captchalab.errors import MissingExtra, UsageError


def connect(address: str | None = None, log_to_driver: bool = False) -> None:
    """Join the cluster at ADDRESS (``ray start --head`` prints it), or start a local one; an open
    session (``ray.init`` called by the user) is used as it is."""
    try:
        import ray
    except ImportError:
        raise MissingExtra("--engine ray needs Ray: pip install 'captchalab[ray]'") from None
    if ray.is_initialized():
        return
    try:
        ray.init(address=address, include_dashboard=False, log_to_driver=log_to_driver, configure_logging=False)
    except (ConnectionError, ValueError) as error:
        raise UsageError(f"{address}: no Ray cluster answers there ({error}); start one with 'ray start --head' "
                         "and pass the address it prints, or leave out --address for a local one") from None
