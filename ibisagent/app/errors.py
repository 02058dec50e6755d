"""HTTP errors of the REST API: a status code and a one-line message, sent as {"error": message}."""

from __future__ import annotations


class ApiError(Exception):
    """A request the server refuses: `status` (4xx, or 507) and a one-line `message` naming the problem."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}


def bad_request(message: str) -> ApiError:
    return ApiError(400, message)


def not_found(message: str) -> ApiError:
    return ApiError(404, message)


def too_large(message: str) -> ApiError:
    return ApiError(413, message)


def unsupported(message: str) -> ApiError:
    return ApiError(415, message)


def busy(message: str, retry_after_s: int = 1) -> ApiError:
    return ApiError(429, message, {"Retry-After": str(retry_after_s)})
