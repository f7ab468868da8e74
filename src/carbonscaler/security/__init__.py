"""What the services trust: bearer tokens (:mod:`.tokens`) and request destinations
(:mod:`.netguard`). Pure standard-library code, below every other layer.

The names are imported on first use (the destination checks need asyncio), so the command
line's token options stay light.
"""

from typing import TYPE_CHECKING

from carbonscaler._lazy import lazy_exports

if TYPE_CHECKING:
    from carbonscaler.security.netguard import DestinationPolicy, DestinationRefused, parse_networks
    from carbonscaler.security.tokens import (
        ENV_TOKEN,
        ENV_TOKEN_FILE,
        InsecureBindError,
        TokenError,
        check_bind,
        load_token,
        push_authorized,
        push_key,
        token_matches,
        with_push_key,
    )
else:
    __getattr__, __dir__ = lazy_exports(
        __name__,
        {
            "carbonscaler.security.netguard": (
                "DestinationPolicy",
                "DestinationRefused",
                "parse_networks",
            ),
            "carbonscaler.security.tokens": (
                "ENV_TOKEN",
                "ENV_TOKEN_FILE",
                "InsecureBindError",
                "TokenError",
                "check_bind",
                "load_token",
                "push_authorized",
                "push_key",
                "token_matches",
                "with_push_key",
            ),
        },
    )

__all__ = [
    "ENV_TOKEN",
    "ENV_TOKEN_FILE",
    "DestinationPolicy",
    "DestinationRefused",
    "InsecureBindError",
    "TokenError",
    "check_bind",
    "load_token",
    "parse_networks",
    "push_authorized",
    "push_key",
    "token_matches",
    "with_push_key",
]
