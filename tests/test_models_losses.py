"""Contrastive losses: ALIGN formula, UniCL targets, numerical safety, and 2-process gather equivalence."""

from __future__ import annotations

import math
import os

import pytest
import torch
import torch.nn.functional as F

from aligndata.models.losses import AlignLoss, UniclLoss, caption_label, class_label


def _embeds(n=6, d=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    img = F.normalize(torch.randn(n, d, generator=g), dim=-1)
    txt = F.normalize(torch.randn(n, d, generator=g), dim=-1)
    return img, txt


def test_align_loss_matches_the_formula_with_label_smoothing():
    img, txt = _embeds()
    tau = torch.tensor(0.5)
    logits = img @ txt.t() / tau
    target = torch.arange(6)
    expected = F.cross_entropy(logits, target, label_smoothing=0.1) + F.cross_entropy(logits.t(), target,
                                                                                       label_smoothing=0.1)
    assert torch.allclose(AlignLoss(0.1, gather=False)(img, txt, tau), expected, atol=1e-6)


def test_unicl_with_unique_labels_equals_align():
    img, txt = _embeds()
    tau = torch.tensor(0.3)
    labels = torch.tensor([caption_label(f"caption {i}") for i in range(6)])
    for smoothing in (0.0, 0.1):
        a = AlignLoss(smoothing, gather=False)(img, txt, tau)
        u = UniclLoss(smoothing, gather=False)(img, txt, tau, labels)
        assert torch.allclose(a, u, atol=1e-6)


def test_unicl_counts_identical_captions_and_same_class_as_positives():
    img, txt = _embeds(4)
    tau = torch.tensor(1.0)
    labels = torch.tensor([caption_label("a red circle"), caption_label("A red circle "), class_label(3),
                           class_label(3)])
    assert labels[0] == labels[1] and labels[2] == labels[3]
    logits = img @ txt.t()
    targets = torch.tensor([[.5, .5, 0, 0], [.5, .5, 0, 0], [0, 0, .5, .5], [0, 0, .5, .5]])
    expected = (-(targets * F.log_softmax(logits, 1)).sum(1).mean()
                - (targets * F.log_softmax(logits.t(), 1)).sum(1).mean())
    got = UniclLoss(0.0, gather=False)(img, txt, tau, labels)
    assert torch.allclose(got, expected, atol=1e-6)
    # ...and differs from ALIGN, which treats row 1 as a negative of image 0
    assert not torch.allclose(got, AlignLoss(0.0, gather=False)(img, txt, tau))


def test_caption_labels_never_collide_with_classes():
    assert caption_label("anything") < 0 <= class_label(0)
    with pytest.raises(ValueError):
        class_label(-1)


def test_extreme_logits_and_temperatures_stay_finite():
    img, txt = _embeds()
    big_img, big_txt = img * 1e4, txt * 1e4  # unnormalised: logits around 1e8
    for loss in (AlignLoss(0.1, gather=False), UniclLoss(0.1, gather=False)):
        labels = torch.arange(6)
        for tau in (torch.tensor(1e-12, requires_grad=True), torch.tensor(-3.0, requires_grad=True),
                    torch.tensor(1e6, requires_grad=True)):
            a = big_img.clone().requires_grad_()
            value = loss(a, big_txt, tau, labels)
            value.backward()
            assert math.isfinite(value.item())
            assert torch.isfinite(a.grad).all()


def test_shape_mismatch_is_a_clear_error():
    img, txt = _embeds()
    with pytest.raises(ValueError, match="same shape"):
        AlignLoss()(img, txt[:3], torch.tensor(1.0))


# ------------------------------------------------------------------------------------- two processes, gloo

def _setup_problem():
    """A linear 'dual encoder' and a global batch of 8 with two identical captions (labels 0 and 1 equal)."""
    g = torch.Generator().manual_seed(1)
    w_img = torch.randn(7, 5, generator=g)
    w_txt = torch.randn(6, 5, generator=g)
    x_img = torch.randn(8, 7, generator=g)
    x_txt = torch.randn(8, 6, generator=g)
    labels = torch.tensor([11, 11, 2, 3, 4, 5, 6, 7])
    return w_img, w_txt, x_img, x_txt, labels


def _loss_and_grads(loss_fn, rows, w_img, w_txt, x_img, x_txt, labels):
    w_img = w_img.clone().requires_grad_()
    w_txt = w_txt.clone().requires_grad_()
    tau = torch.tensor(0.2, requires_grad=True)
    img = F.normalize(x_img[rows] @ w_img, dim=-1)
    txt = F.normalize(x_txt[rows] @ w_txt, dim=-1)
    loss = loss_fn(img, txt, tau, labels[rows])
    loss.backward()
    return loss.detach(), w_img.grad, w_txt.grad, tau.grad


def _worker(rank, world, rendezvous, queue):
    # file rendezvous: no TCP port to race for with other processes on a shared machine
    torch.distributed.init_process_group("gloo", init_method=f"file://{rendezvous}", rank=rank, world_size=world)
    results = {}
    for kind, loss_fn in (("align", AlignLoss(0.1)), ("unicl", UniclLoss(0.1))):
        rows = slice(rank * 4, rank * 4 + 4)
        loss, g1, g2, g3 = _loss_and_grads(loss_fn, rows, *_setup_problem())
        # what DDP does: average gradients (and we average the per-rank losses to report the global loss)
        for t in (loss, g1, g2, g3):
            torch.distributed.all_reduce(t)
            t /= world
        results[kind] = [t.tolist() for t in (loss, g1, g2, g3)]  # plain data: outlives this process
    if rank == 0:
        queue.put(results)
        queue.close()
        queue.join_thread()  # the result is in the pipe before this process ends
    torch.distributed.barrier()
    # Skip gloo's teardown: destroying the group while the peer exits can abort a rank (SIGABRT, seen here).
    os._exit(0)


def test_two_gloo_processes_match_one_process_on_the_global_batch(tmp_path):
    ctx = torch.multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    rendezvous = tmp_path / "rendezvous"
    procs = [ctx.Process(target=_worker, args=(r, 2, str(rendezvous), queue)) for r in range(2)]
    for p in procs:
        p.start()
    try:
        distributed = queue.get(timeout=120)
    finally:
        for p in procs:
            p.join(timeout=60)
    assert [p.exitcode for p in procs] == [0, 0]
    for kind, loss_fn in (("align", AlignLoss(0.1, gather=False)), ("unicl", UniclLoss(0.1, gather=False))):
        single = _loss_and_grads(loss_fn, slice(0, 8), *_setup_problem())
        for d, s in zip(distributed[kind], single):  # loss, both weight gradients, temperature gradient
            assert torch.allclose(torch.tensor(d), s, atol=1e-5, rtol=1e-4), (kind, d, s)
