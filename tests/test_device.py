"""Device names are checked before any work, with a one-line error naming the device and the fix."""

import pytest
import torch

from cwhawq.device import resolve_device
from cwhawq.errors import CwhawqError


@pytest.mark.parametrize("name", ["cpu", "cpu:0"])
def test_the_cpu_is_always_usable(name):
    assert resolve_device(name).type == "cpu"


@pytest.mark.parametrize(
    ("name", "message"),
    [("gpu", "unknown device 'gpu'"), ("meta", "not supported"), ("cuda:99", "'cuda:99' asked for")],
)
def test_an_unusable_device_is_refused(name, message):
    with pytest.raises(CwhawqError, match=message):
        resolve_device(name)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA device")
def test_cuda_without_a_gpu_says_how_to_go_on():
    with pytest.raises(CwhawqError, match="no CUDA device.*--device cpu"):
        resolve_device("cuda")
