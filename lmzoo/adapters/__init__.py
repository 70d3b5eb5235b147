"""Model families (DESIGN §2): each module here turns the networks of one family into a Spec and
applies plans back onto them, registered with ``@register_adapter``. A new family is one new file;
``lmzoo.adapters.base`` holds what families are built from."""

from lmzoo.adapters.base.registry import (
    Adapter,
    Mergeable,
    adapter_by_family,
    adapter_for,
    register_adapter,
    registered_families,
)

__all__ = [
    "Adapter",
    "Mergeable",
    "adapter_by_family",
    "adapter_for",
    "register_adapter",
    "registered_families",
]
