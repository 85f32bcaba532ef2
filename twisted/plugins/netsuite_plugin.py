from twisted.application.service import ServiceMaker

netsuite = ServiceMaker(
    "netsuite",
    "netsuite.tap",
    "HTTP, chat, echo and proxy servers in one process.",
    "netsuite",
)
