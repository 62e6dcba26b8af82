"""An application that configures logging before or after ``otelkit.init()`` (run as a subprocess).

Usage: python log_order_app.py ORDER LEVEL TOKEN

ORDER: ``before`` (``logging.basicConfig`` then ``init``), ``after`` (``init`` then ``basicConfig``),
``force`` (``basicConfig`` before ``init``, then ``basicConfig(force=True)`` after it), ``dictconfig``
(``logging.config.dictConfig`` after ``init``), ``none`` (the application configures no logging).
LEVEL: the level the application gives ``basicConfig`` (``INFO``, ``WARNING``).
The application's console handler writes ``APP <level> <message>`` lines to stdout. otelkit is configured
from the environment (OTEL_*). Messages carry TOKEN so a test can tell runs apart. At the end the app
prints ``ROOT <level name> INFO-ENABLED <bool>`` on stdout: what ``logging`` itself now decides.
"""

from __future__ import annotations

import logging
import logging.config
import sys

import otelkit

FORMAT = "APP %(levelname)s %(message)s"


def configure(level: int, force: bool = False) -> None:
    logging.basicConfig(level=level, format=FORMAT, stream=sys.stdout, force=force)


def main() -> None:
    order, level_name, token = sys.argv[1], sys.argv[2], sys.argv[3]
    level = logging.getLevelName(level_name)
    if order in ("before", "force"):
        configure(level)
    otelkit.init(service_name="log-order-app", instrument=(), system_metrics=False)
    if order == "after":
        configure(level)
    elif order == "force":
        configure(level, force=True)
    elif order == "dictconfig":
        logging.config.dictConfig({
            "version": 1,
            "formatters": {"app": {"format": FORMAT}},
            "handlers": {"out": {"class": "logging.StreamHandler", "stream": "ext://sys.stdout",
                                 "formatter": "app"}},
            "root": {"level": level_name, "handlers": ["out"]},
        })
    log = logging.getLogger("shop.orders")
    log.debug("debug %s", token)
    log.info("info %s", token)
    log.warning("warning %s", token)
    root = logging.getLogger()
    print(f"ROOT {logging.getLevelName(root.level)} INFO-ENABLED {log.isEnabledFor(logging.INFO)}", flush=True)


if __name__ == "__main__":
    main()
