"""Errors that reach API clients.

Exception
└── ApiError                 JSON `{error: {code, message}}` with an HTTP status
    ├── BadRequest           400 invalid_json / invalid_request
    ├── ValidationFailed     422 validation_error
    ├── NotAuthenticated     401 not_authenticated
    ├── Forbidden            403 forbidden / csrf_failed
    ├── NotFound             404 not_found
    ├── Conflict             409 conflict
    ├── PayloadTooLarge      413 payload_too_large / upload_too_large
    ├── UnsupportedMedia     415 unsupported_media
    └── TooManyRequests      429 rate_limited
"""

from __future__ import annotations


class ApiError(Exception):
    status = 500
    code = "internal_error"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code


class BadRequest(ApiError):
    status = 400
    code = "invalid_request"


class ValidationFailed(ApiError):
    status = 422
    code = "validation_error"


class NotAuthenticated(ApiError):
    status = 401
    code = "not_authenticated"


class Forbidden(ApiError):
    status = 403
    code = "forbidden"


class NotFound(ApiError):
    status = 404
    code = "not_found"


class Conflict(ApiError):
    status = 409
    code = "conflict"


class PayloadTooLarge(ApiError):
    status = 413
    code = "payload_too_large"


class UnsupportedMedia(ApiError):
    status = 415
    code = "unsupported_media"


class TooManyRequests(ApiError):
    status = 429
    code = "rate_limited"

    def __init__(self, message: str, *, code: str | None = None, retry_after: int | None = None) -> None:
        super().__init__(message, code=code)
        self.retry_after = retry_after
