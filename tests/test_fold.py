"""A folded network sees the whole frame at about the cost of one a fold^2 smaller."""

import pytest
import torch

from ptychoedge.inference.model import PtychoNN, flops_per_frame
from ptychoedge.inference.model_shape import ModelShape


def test_a_folded_network_maps_the_whole_frame_to_the_whole_field():
    torch.manual_seed(0)
    shape = ModelShape(128, 8, "batch", "free", fold=2)
    model = PtychoNN(shape).eval()
    frames = torch.rand(3, 1, 128, 128)
    with torch.inference_mode():
        out = model(frames)
    assert out.shape == (3, 2, 128, 128)
    # every output pixel depends on the input: moving one detector pixel changes the field.
    # Untrained, the change can be as small as 1e-6 (4 of 60 seeds): any change counts.
    changed = frames.clone()
    changed[:, :, 70, 70] += 5.0
    with torch.inference_mode():
        assert not torch.equal(model(changed), out)


def test_folding_costs_about_what_the_smaller_network_costs():
    folded = flops_per_frame(ModelShape(128, 16, fold=2))
    small, whole = flops_per_frame(ModelShape(64, 16)), flops_per_frame(ModelShape(128, 16))
    assert small < folded < 1.1 * small
    assert whole > 3.9 * small


@pytest.mark.parametrize("size, fold", [(40, 2), (96, 0), (8, 2)])
def test_sizes_the_fold_cannot_divide_are_refused(size, fold):
    with pytest.raises(ValueError, match="multiple|fold"):
        ModelShape(size, fold=fold)


def test_a_manifest_says_fold_only_where_the_network_folds():
    assert "fold" not in ModelShape(64, 16).as_dict()  # bundles made before read the same
    folded = ModelShape(128, 16, "batch", "bounded", fold=2)
    assert ModelShape(**folded.as_dict()) == folded
