"""Research-to-live workbench for intraday trading with reinforcement learning

Modules:

- `intraday.orders`: One order state machine for both sides of the wire: `OrderStatus`, the events that move an order, and the transition table as data. The router's view of an order and the paper venue's own order follow the same table."""

__version__ = "0.1.0"

# The library never adds log sinks; entry points call intraday.obs.setup_logging, which re-enables this logger.
from loguru import logger as _logger

_logger.disable("intraday")
