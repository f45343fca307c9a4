"""Adaptive Latent Hypersurfaces: context encoders, transform families, the adapted model, baselines."""
from .adapted import ALHConfig, alh_backward, alh_forward, alh_init, alh_loss_and_grads, alh_param_shapes
from .transforms import FAMILIES

__all__ = ["ALHConfig", "FAMILIES", "alh_backward", "alh_forward", "alh_init", "alh_loss_and_grads", "alh_param_shapes"]
