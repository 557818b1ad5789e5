"""The one exception the sim's handlers raise to answer a client error."""


class SimError(Exception):
    """A request the sim refuses: carries the HTTP status and a short machine-readable code."""

    def __init__(self, status: int, error: str, message: str = "") -> None:
        super().__init__(message or error)
        self.status = status
        self.error = error
        self.message = message


def bad_request(message: str) -> SimError:
    return SimError(400, "BadRequest", message)
