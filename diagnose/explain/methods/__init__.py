"""One adapter per attribution method; importing this package registers them all."""

from diagnose.explain.methods import (  # noqa: F401 - importing a method's module registers it
    deeplift,
    feature_ablation,
    grad_cam,
    gradient_shap,
    input_x_gradient,
    integrated_gradients,
    occlusion,
    saliency,
    shap_deep,
    shap_gradient,
    shap_kernel,
    shap_permutation,
)
