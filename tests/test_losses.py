import pytest
import torch

from bratsseg import BratsSegError
from bratsseg.losses import RegionLoss, soft_dice_loss


def test_perfect_and_wrong_predictions():
    target = (torch.rand(2, 3, 8, 8, 8) > 0.5).float()
    perfect = (target * 2 - 1) * 50
    assert RegionLoss()(perfect, target) < 1e-3
    assert RegionLoss()(-perfect, target) > 10


def test_batch_dice_on_an_empty_slice():
    # sample 0 has no tumour and predicts a little: per-sample Dice punishes it fully, batch Dice barely
    target = torch.zeros(2, 1, 8, 8)
    target[1, 0, 2:6, 2:6] = 1
    logits = torch.where(target > 0, 10.0, -10.0)
    logits[0, 0, 0, 0] = 10.0
    per_sample = soft_dice_loss(logits, target)
    pooled = soft_dice_loss(logits, target, batch_dice=True)
    assert per_sample > 0.45 and pooled < 0.05


def test_weights():
    target = (torch.rand(1, 3, 6, 6) > 0.5).float()
    logits = torch.randn(1, 3, 6, 6)
    bce = RegionLoss(1, 0)(logits, target)
    dice = RegionLoss(0, 1)(logits, target)
    assert torch.allclose(RegionLoss(2, 3)(logits, target), 2 * bce + 3 * dice)
    with pytest.raises(BratsSegError, match="loss weights"):
        RegionLoss(0, 0)
    with pytest.raises(BratsSegError, match="differ in shape"):
        RegionLoss()(logits, target[..., :5])


def test_deep_supervision_weights_and_downsampled_targets():
    target = torch.zeros(1, 3, 8, 8, 8)
    target[:, :, 3, 3, 3] = 1  # one voxel: max-pooling keeps it at every scale
    outs = [torch.randn(1, 3, 8, 8, 8), torch.randn(1, 3, 4, 4, 4), torch.randn(1, 3, 2, 2, 2)]
    loss = RegionLoss()
    expected = (
        loss(outs[0], target)
        + 0.5 * loss(outs[1], torch.nn.functional.max_pool3d(target, 2))
        + 0.25 * loss(outs[2], torch.nn.functional.max_pool3d(target, 4))
    ) / 1.75
    assert torch.allclose(loss(outs, target), expected)


@pytest.mark.parametrize("batch_dice", [False, True])
def test_region_weights(batch_dice):
    torch.manual_seed(0)
    target = (torch.rand(2, 3, 6, 6, 6) > 0.5).float()
    logits = torch.randn(2, 3, 6, 6, 6)
    plain = RegionLoss(batch_dice=batch_dice)
    # equal weights: the plain loss, bit for bit
    assert torch.equal(
        RegionLoss(batch_dice=batch_dice, region_weights=(2, 2, 2))(logits, target), plain(logits, target)
    )
    # all the weight on ET: the loss of the ET channel alone (BCE and Dice)
    et_only = RegionLoss(batch_dice=batch_dice, region_weights=(0, 0, 1))(logits, target)
    assert torch.allclose(et_only, plain(logits[:, 2:], target[:, 2:]))
    # weights normalised to a mean of 1: ET weighted 2 is (WT + TC + 2 ET) / 4 of the per-region losses
    per_region = [plain(logits[:, r : r + 1], target[:, r : r + 1]) for r in range(3)]
    weighted = RegionLoss(batch_dice=batch_dice, region_weights=(1, 1, 2))(logits, target)
    assert torch.allclose(weighted, (per_region[0] + per_region[1] + 2 * per_region[2]) / 4)
    # with deep supervision too (a list of outputs)
    assert RegionLoss(region_weights=(1, 1, 2))([logits, logits[:, :, ::2, ::2, ::2]], target) > 0
    with pytest.raises(BratsSegError, match="region loss weights"):
        RegionLoss(region_weights=(0, 0, 0))
