import torch

from gair.losses.queue import LocationQueue, random_lonlat


def test_initial_queue_is_spread_over_the_globe_not_near_zero():
    q = LocationQueue(4096, seed=0)
    ll = q.lonlat
    assert ll.shape == (4096, 2)
    assert ll[:, 0].abs().max() <= 180 and ll[:, 1].abs().max() <= 90
    assert ll[:, 0].std() > 90 and ll[:, 1].abs().mean() > 20  # area-uniform: mean |lat| ~ 32.7
    assert torch.equal(random_lonlat(10, seed=1), random_lonlat(10, seed=1))


def test_fifo_order_wraparound_and_mask():
    q = LocationQueue(5, seed=0)
    q.enqueue(torch.tensor([[1.0, 1.0], [2.0, 2.0], [9.0, 9.0]]), torch.tensor([True, True, False]))
    assert q.ptr.item() == 2 and q.lonlat[:2].tolist() == [[1, 1], [2, 2]]
    q.enqueue(torch.tensor([[3.0, 3], [4, 4], [5, 5], [6, 6]]))
    # 6 overwrote the oldest entry (slot 0); the pointer wrapped
    assert q.lonlat[:, 0].tolist() == [6, 2, 3, 4, 5] and q.ptr.item() == 1
    q.enqueue(torch.arange(14, dtype=torch.float32).view(7, 2))  # more than the queue: keep the newest
    assert sorted(q.lonlat[:, 0].tolist()) == [4, 6, 8, 10, 12]


def test_queue_is_saved_in_the_state_dict():
    q = LocationQueue(8)
    q.enqueue(torch.tensor([[7.0, 7.0]]))
    q2 = LocationQueue(8, seed=5)
    q2.load_state_dict(q.state_dict())
    assert torch.equal(q2.lonlat, q.lonlat) and q2.ptr.item() == 1


def test_empty_queue_is_a_no_op():
    q = LocationQueue(0)
    q.enqueue(torch.tensor([[1.0, 1.0]]))
    assert q.lonlat.shape == (0, 2)


def test_enqueue_matches_the_boolean_index_form():
    """The sync-free enqueue equals 'append coords[mask], keep the newest' on random masks."""
    g = torch.Generator().manual_seed(0)
    q, ref, ptr = LocationQueue(7, seed=0), random_lonlat(7, seed=0), 0
    for n in (3, 0, 5, 12, 1, 9):
        coords = torch.rand(n, 2, generator=g) * 100
        mask = torch.rand(n, generator=g) > 0.4
        q.enqueue(coords, mask)
        for row in coords[mask][-7:]:
            ref[ptr] = row
            ptr = (ptr + 1) % 7
        assert torch.equal(q.lonlat, ref) and q.ptr.item() == ptr
