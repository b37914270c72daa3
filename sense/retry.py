"""When a request to the API is sent again, built on urllib3's ``Retry``.

Imported only at the first REST call: it imports urllib3.
"""

from __future__ import annotations

from urllib3.exceptions import ReadTimeoutError
from urllib3.util.retry import Retry

#: Methods that may be sent twice without doing twice what they do.
IDEMPOTENT_METHODS = frozenset({"GET", "PATCH", "PUT"})
#: Answers of a proxy or a server that is restarting: worth asking again.
TRANSIENT_STATUSES = frozenset({502, 503, 504})


class ApiRetry(Retry):
    """urllib3's ``Retry``, except that a read timeout is final.

    A server that does not answer within the read timeout is slow, not gone;
    asking again would make the caller wait a multiple of the timeout it set.
    """

    def increment(
        self, method=None, url=None, response=None, error=None, _pool=None, _stacktrace=None
    ):
        if isinstance(error, ReadTimeoutError):
            raise error
        return super().increment(method, url, response, error, _pool, _stacktrace)


def policy(attempts: int, backoff_factor: float) -> ApiRetry:
    """The retry policy of every request: ``attempts`` retries at most.

    A connection that could not be made is retried for every method, POST
    included, since the request never left. A dropped connection or a 502,
    503 or 504 is retried only for idempotent methods: a POST sent twice
    would launch a worker twice.

    Examples
    --------
    >>> policy(3, 0.25).allowed_methods == IDEMPOTENT_METHODS
    True
    """
    return ApiRetry(
        total=attempts,
        connect=attempts,
        read=attempts,
        status=attempts,
        other=0,
        allowed_methods=IDEMPOTENT_METHODS,
        status_forcelist=TRANSIENT_STATUSES,
        backoff_factor=backoff_factor,
        raise_on_status=False,
        respect_retry_after_header=True,
    )
