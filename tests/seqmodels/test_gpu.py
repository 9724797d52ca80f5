"""The models on CUDA through the Triton kernels (run on the GPU machine: pytest -m gpu tests/seqmodels)."""

import pytest
import torch

from seqmodels import BackboneConfig, Mamba, MambaClassifier, MambaStack

pytestmark = pytest.mark.gpu


def test_mamba_on_cuda_matches_the_cpu_path_forward_and_backward():
    torch.manual_seed(0)
    cpu = Mamba(d_model=64, d_state=16)
    gpu = Mamba(d_model=64, d_state=16).cuda()
    gpu.load_state_dict(cpu.state_dict())
    x = torch.randn(2, 300, 64)
    w = torch.randn(2, 300, 64)
    (cpu(x) * w).sum().backward()
    out = gpu(x.cuda())
    (out * w.cuda()).sum().backward()
    torch.testing.assert_close(out.cpu(), cpu(x), rtol=1e-3, atol=1e-3)
    for (name, a), (_, b) in zip(cpu.named_parameters(), gpu.named_parameters()):
        torch.testing.assert_close(b.grad.cpu(), a.grad, rtol=1e-2, atol=1e-3, msg=name)


def test_chunked_and_step_equal_one_pass_on_cuda():
    torch.manual_seed(1)
    stack = MambaStack(BackboneConfig(d_model=64, n_layer=2)).cuda()
    x = torch.randn(2, 100, 64, device="cuda")
    full = stack(x)
    a, states = stack.forward_chunk(x[:, :60])
    b, states = stack.forward_chunk(x[:, 60:90], states)
    steps = [stack.step(x[:, t:t + 1], states) for t in range(90, 100)]
    torch.testing.assert_close(torch.cat([a, b, *steps], 1), full, rtol=1e-3, atol=1e-3)


def test_step_replays_as_a_cuda_graph():
    torch.manual_seed(2)
    stack = MambaStack(BackboneConfig(d_model=64, n_layer=2)).cuda().eval()
    tokens = torch.randn(4, 6, 64, device="cuda")
    eager_states = stack.allocate_inference_cache(4, 6)
    eager = [stack.step(tokens[:, t:t + 1], eager_states) for t in range(6)]
    states = stack.allocate_inference_cache(4, 6)
    static_in = torch.zeros(4, 1, 64, device="cuda")
    warm = [s.clone() for pair in states for s in pair]
    with torch.no_grad():
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            stack.step(static_in, states)
        torch.cuda.current_stream().wait_stream(stream)
        for s, w in zip((s for pair in states for s in pair), warm):  # undo the warm-up step
            s.copy_(w)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            static_out = stack.step(static_in, states)
        for s, w in zip((s for pair in states for s in pair), warm):  # undo the captured step
            s.copy_(w)
        replayed = []
        for t in range(6):
            static_in.copy_(tokens[:, t:t + 1])
            graph.replay()
            replayed.append(static_out.clone())
    torch.testing.assert_close(torch.cat(replayed, 1), torch.cat(eager, 1), rtol=1e-4, atol=1e-4)


def test_bf16_autocast_training_step_keeps_fp32_parameters():
    torch.manual_seed(3)
    model = MambaClassifier(n_classes=2, d_model=64, n_layer=2, bidirectional=True, rc_equivariant=True).cuda()
    tokens = torch.randint(2, 7, (4, 512), device="cuda")
    lengths = torch.tensor([512, 400, 100, 7], device="cuda")
    with torch.autocast("cuda", dtype=torch.bfloat16):
        logits = model(tokens, lengths)
    torch.nn.functional.cross_entropy(logits.float(), torch.tensor([0, 1, 0, 1], device="cuda")).backward()
    for name, p in model.named_parameters():
        assert p.dtype == torch.float32 and p.grad is not None and bool(torch.isfinite(p.grad).all()), name
