"""The ViT shapes every benchmark section times, in one place.

``VitShape`` holds a timm ViT's per-block dimensions; ``TOKENS`` are the sequence lengths of
224 px (196 patches + the class token) and 384 px inputs at patch 16. Batches are chosen per
section (CPU and GPU differ) but the model dimensions are shared.
"""

from __future__ import annotations

from typing import NamedTuple


class VitShape(NamedTuple):
    """One ViT family's block dimensions and the timm model timed by the whole-model section."""

    name: str        # short label used in rows (vit_s, vit_b, vit_l)
    dim: int         # embedding width C
    heads: int       # attention heads H (head dim C / H = 64 for all three)
    mlp: int         # MLP hidden width (4 C)
    timm_model: str  # the timm model of this width at 224 px, patch 16

    @property
    def head_dim(self) -> int:
        return self.dim // self.heads


VIT_S = VitShape("vit_s", 384, 6, 1536, "vit_small_patch16_224")
VIT_B = VitShape("vit_b", 768, 12, 3072, "vit_base_patch16_224")
VIT_L = VitShape("vit_l", 1024, 16, 4096, "vit_large_patch16_224")

#: Tokens per image at 224 px (14 x 14 patches + class token) and at 384 px (24 x 24 + 1).
TOKENS = 197
TOKENS_384 = 577

#: The CPU sections time ViT-S and ViT-B; the GPU sections add ViT-L.
CPU_MODELS = (VIT_S, VIT_B)
GPU_MODELS = (VIT_S, VIT_B, VIT_L)

#: Whole-model section: DeiT-S (the FQ-ViT paper's smallest model) and the two timm ViTs.
MODEL_NAMES = ("deit_small_patch16_224", VIT_S.timm_model, VIT_B.timm_model)
