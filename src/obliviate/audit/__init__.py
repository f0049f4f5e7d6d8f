from .suite import UTILITY_KEYS, audit_model, compare_to_oracle

__all__ = ["UTILITY_KEYS", "audit_model", "compare_to_oracle"]
