from .certify import CertifyConfig, certify, load_certify_config
from .suite import UTILITY_KEYS, audit_model, compare_to_oracle

__all__ = ["UTILITY_KEYS", "CertifyConfig", "audit_model", "certify", "compare_to_oracle", "load_certify_config"]
