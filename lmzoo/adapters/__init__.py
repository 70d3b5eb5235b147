"""Model-family adapters. Each public module here registers one family with @register_adapter."""

from lmzoo.adapters._registry import (
    Adapter,
    adapter_by_family,
    adapter_for,
    register_adapter,
    registered_families,
)

__all__ = ["Adapter", "adapter_by_family", "adapter_for", "register_adapter", "registered_families"]
