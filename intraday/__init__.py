"""Research-to-live workbench for intraday trading with reinforcement learning"""

__version__ = "0.1.0"

# The library never adds log sinks; entry points call intraday.obs.setup_logging, which re-enables this logger.
from loguru import logger as _logger

_logger.disable("intraday")
