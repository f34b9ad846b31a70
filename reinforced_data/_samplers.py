"""The samplers behind :meth:`reinforced_data.policy.Policy.sample`: each stage's draws (crop, RandAugment
and the other op families, AugMix, colour jitter, the 3-Augment ops, erasing, mixing), as the libraries draw them,
vectorised over a view's K records. The same generator state gives the same parameters on every machine.

Each takes the numpy generator, the number of views and the policy (or the values it needs) and returns
or fills the records' fields; the codes a record stores are defined here (mixing modes, the identity
jitter order, the padded-crop bound).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from . import _families as FAM
from .errors import ConfigError

MIX_NONE, MIX_MIXUP, MIX_CUTMIX, MIX_BOTH = 0, 1, 2, 3  # a record's mix_mode
MAX_PADDED_SOURCE = 32767  # padded crops are stored as int16
JITTER_IDENTITY_ORDER = 0b11100100  # the permutation (0, 1, 2, 3), two bits per position


def _box_attempts(rng, k, height, width, scale, ratio, attempts) -> tuple[np.ndarray, np.ndarray]:
    """``attempts`` boxes per view as torchvision draws them (an area share, then a log-uniform aspect
    ratio): the rounded sqrt(area * aspect) and sqrt(area / aspect) of each."""
    target = height * width * rng.uniform(scale[0], scale[1], size=(k, attempts))
    aspect = np.exp(rng.uniform(math.log(ratio[0]), math.log(ratio[1]), size=(k, attempts)))
    return np.round(np.sqrt(target * aspect)).astype(np.int64), np.round(np.sqrt(target / aspect)).astype(np.int64)


def resized_crop(rng, k, height, width, scale, ratio, attempts=10) -> np.ndarray:
    """torchvision's RandomResizedCrop.make_params, ``attempts`` tries per view at once."""
    w, h = _box_attempts(rng, k, height, width, scale, ratio, attempts)
    ok = (w > 0) & (w <= width) & (h > 0) & (h <= height)
    first = np.argmax(ok, axis=1)
    found = ok[np.arange(k), first]
    h = h[np.arange(k), first]
    w = w[np.arange(k), first]
    # Central fallback crop (torchvision's), used where no attempt fitted.
    in_ratio = width / height
    if in_ratio < min(ratio):
        fw, fh = width, int(round(width / min(ratio)))
    elif in_ratio > max(ratio):
        fh, fw = height, int(round(height * max(ratio)))
    else:
        fw, fh = width, height
    h = np.where(found, h, fh)
    w = np.where(found, w, fw)
    u = rng.random((k, 2))
    top = np.where(found, np.floor(u[:, 0] * (height - h + 1)), (height - fh) // 2)
    left = np.where(found, np.floor(u[:, 1] * (width - w + 1)), (width - fw) // 2)
    return np.stack([top, left, h, w], axis=1).astype(np.uint16)


def erase_box(rng, k, height, width, scale, ratio, attempts=10) -> np.ndarray:
    """torchvision's RandomErasing.make_params; a view with no fitting attempt gets no box."""
    h, w = _box_attempts(rng, k, height, width, scale, ratio, attempts)
    ok = (h < height) & (w < width) & (h > 0) & (w > 0)
    first = np.argmax(ok, axis=1)
    found = ok[np.arange(k), first]
    h = np.where(found, h[np.arange(k), first], 0)
    w = np.where(found, w[np.arange(k), first], 0)
    u = rng.random((k, 2))
    top = np.floor(u[:, 0] * (height - h + 1))
    left = np.floor(u[:, 1] * (width - w + 1))
    box = np.stack([top, left, h, w], axis=1).astype(np.uint16)
    box[~found] = 0
    return box


def rand_bbox(rng, k, height, width, lam, even: bool = False) -> np.ndarray:
    """A CutMix box: size from sqrt(1 - lam), centre uniform, clipped; [k, 4] top, left, h, w.

    timm's ``rand_bbox`` (margin 0) spans ``centre - cut // 2`` to ``centre + (cut + 1) // 2``;
    ``even=True`` is apple/ml-dr's ``CutMix.rand_bbox``, ``centre ± cut // 2`` (even sides before
    clipping)."""
    cut_rat = np.sqrt(1.0 - lam)
    ch = (height * cut_rat).astype(np.int64)
    cw = (width * cut_rat).astype(np.int64)
    cy = rng.integers(0, height, size=k)
    cx = rng.integers(0, width, size=k)
    up = 0 if even else 1  # the half above the centre: cut // 2, or timm's (cut + 1) // 2
    y0 = np.clip(cy - ch // 2, 0, height)
    y1 = np.clip(cy + (ch + up) // 2, 0, height)
    x0 = np.clip(cx - cw // 2, 0, width)
    x1 = np.clip(cx + (cw + up) // 2, 0, width)
    return np.stack([y0, x0, y1 - y0, x1 - x0], axis=1)


def mix(rng, k, height, width, policy):
    """Mixing draws: mode, this view's weight λ (quantised to 1/255), CutMix box.

    "switch": timm's ``Mixup._params_per_elem`` (one of MixUp / CutMix per view).
    "sequential": apple/ml-dr's MixUp (probability mixup_prob, λ = Beta(α, α) / mixup_lam_div)
    then CutMix (probability cutmix_prob) on the same partner; mode 3 when both hit.
    """
    if policy.mix_mode == "sequential":
        return mix_sequential(rng, k, height, width, policy)
    mixed = rng.random(k) < policy.mix_prob
    if policy.mixup_alpha > 0 and policy.cutmix_alpha > 0:
        cut = rng.random(k) < policy.switch_prob
    else:
        cut = np.full(k, policy.cutmix_alpha > 0)
    alpha = np.where(cut, policy.cutmix_alpha, policy.mixup_alpha)
    lam = rng.beta(np.maximum(alpha, 1e-6), np.maximum(alpha, 1e-6))
    box = rand_bbox(rng, k, height, width, lam)
    # CutMix's λ is the share of the view that stays its own (timm's correct_lam).
    cut_lam = 1.0 - (box[:, 2] * box[:, 3]) / float(height * width)
    lam = np.where(cut, cut_lam, lam)
    mode = np.where(mixed, np.where(cut, MIX_CUTMIX, MIX_MIXUP), MIX_NONE)
    box[mode != MIX_CUTMIX] = 0
    lam_q = np.where(mode == MIX_NONE, 255, np.round(lam * 255))
    return mode.astype(np.uint8), lam_q.astype(np.uint8), box.astype(np.uint16)


def mix_sequential(rng, k, height, width, policy):
    a_m, a_c = max(policy.mixup_alpha, 1e-6), max(policy.cutmix_alpha, 1e-6)
    mixup = (rng.random(k) < policy.mixup_prob) & (policy.mixup_alpha > 0)
    mix_lam = rng.beta(a_m, a_m, size=k) / policy.mixup_lam_div
    cutmix = (rng.random(k) < policy.cutmix_prob) & (policy.cutmix_alpha > 0)
    cut_lam = rng.beta(a_c, a_c, size=k)
    box = rand_bbox(rng, k, height, width, cut_lam, even=True)
    cut_lam = 1.0 - (box[:, 2] * box[:, 3]) / float(height * width)
    mode = mixup * MIX_MIXUP + cutmix * MIX_CUTMIX  # 3 = MixUp, then CutMix
    box[~cutmix] = 0
    lam = np.where(mixup, mix_lam, cut_lam)
    lam_q = np.where(mode == MIX_NONE, 255, np.round(lam * 255))
    return mode.astype(np.uint8), lam_q.astype(np.uint8), box.astype(np.uint16)


def padded_crop(rng, k, height, width, oh, ow, padding) -> np.ndarray:
    """torchvision's RandomCrop(output_size, padding).get_params, in source coordinates (top may be < 0)."""
    ph, pw = height + 2 * padding, width + 2 * padding
    if ph < oh or pw < ow:
        raise ConfigError(f"a {height}x{width} image padded by {padding} is smaller than the {oh}x{ow} output: "
                          "torchvision's RandomCrop refuses it; raise crop_padding or use crop_mode='resized'")
    if max(height, width) + padding > MAX_PADDED_SOURCE:
        raise ConfigError(f"image size {height}x{width} with crop_padding={padding}: padded crops hold "
                          f"coordinates up to {MAX_PADDED_SOURCE}")
    top = rng.integers(0, ph - oh + 1, size=k) - padding
    left = rng.integers(0, pw - ow + 1, size=k) - padding
    return np.stack([top, left, np.full(k, oh), np.full(k, ow)], axis=1).astype(np.int16)


def randaugment(rng, k: int, policy, out: np.ndarray) -> None:
    """The RandAugment-like stage of ``policy.ra_family``: op ids, magnitudes, interpolations."""
    n = policy.ra_num_ops
    fam = policy.ra_family
    if fam == "torchvision":  # torchvision's RandAugment; the draws of version 1, unchanged
        ops = rng.integers(0, len(FAM.TORCHVISION_OPS), size=(k, n))
        negative = rng.random((k, n)) <= 0.5
        signed = np.isin(ops, [FAM.KERNEL_OPS.index(o) for o in FAM.TV_SIGNED])
        has_mag = ~np.isin(ops, [FAM.KERNEL_OPS.index(o) for o in FAM.TV_UNPARAMETERISED])
        mag = np.where(has_mag, policy.ra_magnitude, 0)
        mag = np.where(signed & negative, -mag, mag)
    elif fam == "trivialaugment":  # TrivialAugmentWide: one op, a uniform bin, a random sign
        names = FAM.TORCHVISION_OPS
        ops = rng.integers(0, len(names), size=(k, n))
        bins = rng.integers(0, policy.ra_num_magnitude_bins, size=(k, n))
        negative = rng.random((k, n)) <= 0.5
        mag = signed_bins(names, ops, bins, negative, FAM.TV_SIGNED, FAM.TV_UNPARAMETERISED)
    elif fam == "autoaugment":  # AutoAugment(IMAGENET): a sub-policy, each op with its probability
        names = FAM.AUTOAUGMENT_OPS
        table = FAM.AUTOAUGMENT_IMAGENET
        op_tab = np.array([[names.index(o) for o, _, _ in sp] for sp in table])
        p_tab = np.array([[p for _, p, _ in sp] for sp in table])
        b_tab = np.array([[b or 0 for _, _, b in sp] for sp in table])
        sub = rng.integers(0, len(table), size=k)
        applied = rng.random((k, 2)) <= p_tab[sub]
        negative = rng.random((k, 2)) <= 0.5
        ops = np.where(applied, op_tab[sub], 0)
        mag = signed_bins(names, ops, b_tab[sub], negative, FAM.TV_SIGNED, FAM.TV_UNPARAMETERISED)
    else:
        timm_ops(rng, k, policy, out)
        ops, mag = out["ra_op"], out["ra_mag"]
    if policy.ra_prob < 1.0:  # the stage as a whole (the paper's p); off = every slot Identity
        off = rng.random(k) >= policy.ra_prob
        ops = np.where(off[:, None], 0, ops)
        mag = np.where(off[:, None], 0, mag)
        if "ra_interp" in out.dtype.names:
            out["ra_interp"][off] = 0
    out["ra_op"] = ops
    out["ra_mag"] = mag


def jitter(rng, k: int, policy, out: np.ndarray) -> None:
    """torchvision's ColorJitter.get_params / make_params: a random order of the four adjustments
    (``randperm(4)``), each enabled factor uniform over its range; with ``jitter_prob`` < 1 (timm's
    ``RandomApply``), a view that is not jittered stores the identity (factors 1, hue 0, order 0..3).
    Factors are stored in Q16 (uint32), the hue shift in 1/65536 of a turn (int16, +0.5 stored as -0.5:
    the same shift)."""
    applied = rng.random(k) < policy.jitter_prob if policy.jitter_prob < 1.0 else np.ones(k, dtype=bool)
    order = np.argsort(rng.random((k, 4)), axis=1)
    on = policy.jitter_components
    factor = np.full((k, 3), 1 << 16, dtype=np.int64)
    ranges = (policy.jitter_brightness, policy.jitter_contrast, policy.jitter_saturation)
    for i in range(3):
        if i in on:
            lo, hi = ranges[i]
            factor[:, i] = np.round(rng.uniform(lo, hi, size=k) * (1 << 16))
    factor[~applied] = 1 << 16
    packed = (order << np.arange(0, 8, 2)).sum(axis=1)
    out["jitter_order"] = np.where(applied, packed, JITTER_IDENTITY_ORDER)
    out["jitter_factor"] = factor
    if 3 in on:
        lo, hi = policy.jitter_hue
        q = np.round(rng.uniform(lo, hi, size=k) * (1 << 16)).astype(np.int64)
        q = (q + (1 << 15)) % (1 << 16) - (1 << 15)
        out["jitter_hue"] = np.where(applied, q, 0)


def extra_ops(rng, k: int, policy, out: np.ndarray) -> None:
    """torchvision's RandomGrayscale (applied when a uniform draw is below p), GaussianBlur in a RandomApply
    (sigma uniform over ``blur_sigma``, stored in thousandths of a pixel; 0 = not blurred) and RandomSolarize
    (applied when a uniform draw is below p), drawn in that order."""
    if policy.grayscale_prob > 0:
        out["gray"] = rng.random(k) < policy.grayscale_prob
    if policy.blur_prob > 0:
        applied = rng.random(k) < policy.blur_prob
        lo, hi = policy.blur_sigma
        sigma = np.round(rng.uniform(lo, hi, size=k) * 1000).astype(np.int64)
        out["blur_sigma"] = np.where(applied, np.clip(sigma, 1, 65535), 0)
    if policy.solarize_prob > 0:
        out["solarize"] = rng.random(k) < policy.solarize_prob


def signed_bins(names, ops, bins, negative, signed_ops, unparameterised) -> np.ndarray:
    signed = np.isin(ops, [i for i, o in enumerate(names) if o in signed_ops])
    has_mag = ~np.isin(ops, [i for i, o in enumerate(names) if o in unparameterised])
    mag = np.where(has_mag, bins, 0)
    return np.where(signed & negative, -mag, mag)


def _timm_magnitudes(rng: np.random.Generator, cfg: dict, names: Sequence[str], ops: np.ndarray,
                     base: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """timm's magnitude draw for ops ``ops`` (indices into ``names``) of base magnitudes ``base``, as its
    ``AugmentOp`` makes it: the configured noise, clipped to the upper bound, then a random sign for the
    signed ops. Returns (level, the stored magnitude ``round(level * MAG_SCALE)`` signed, the op names,
    which ops take no magnitude)."""
    if cfg["magnitude_noise"] == "gauss":
        level = rng.normal(base, cfg["magnitude_std"])
    elif cfg["magnitude_noise"] == "uniform":
        level = rng.uniform(0.0, base)
    else:
        level = base
    level = np.clip(level, 0.0, FAM.timm_upper_bound(cfg))
    negative = rng.random(ops.shape) > 0.5
    op_names = np.array(names, dtype=object)[ops]
    signed = np.isin(op_names, list(FAM.TIMM_SIGNED))
    q = np.round(level * FAM.MAG_SCALE).astype(np.int64)
    return level, np.where(signed & negative, -q, q), op_names, np.isin(op_names, list(FAM.TIMM_UNPARAMETERISED))


def timm_ops(rng, k: int, policy, out: np.ndarray) -> None:
    """timm's RandAugment / AutoAugment with AugmentOp's draws: apply with the op's probability,
    magnitude noise (gauss / uniform), clip to [0, magnitude_max or 10], random negation of the
    signed ops, and the geometric ops' interpolation. Levels are stored in hundredths."""
    cfg = FAM.parse_config(policy.ra_config)
    names = policy.ra_ops()
    n = policy.ra_num_ops
    if policy.ra_family == "timm":
        entries = cfg["ops"]
        m = len(entries)
        if cfg["weights"] is None:  # np.random.choice(ops, n, replace=True)
            pick = rng.integers(0, m, size=(k, n))
        else:  # choice without replacement, weighted: exponential clocks (Plackett-Luce), the first n
            w = np.asarray(cfg["weights"], dtype=np.float64)
            with np.errstate(divide="ignore"):
                clocks = rng.exponential(size=(k, m)) / w
            pick = np.argsort(clocks, axis=1, kind="stable")[:, :n]
        op_id = np.array([names.index(e[0]) for e in entries])[pick]
        prob = np.array([e[1] for e in entries])[pick]
        base = np.array([e[2] for e in entries], dtype=np.float64)[pick]
        present = np.ones((k, n), dtype=bool)
    else:
        table = cfg["policy"]
        sub = rng.integers(0, len(table), size=k)
        op_tab = np.zeros((len(table), n), dtype=np.int64)
        p_tab = np.zeros((len(table), n))
        m_tab = np.zeros((len(table), n))
        has = np.zeros((len(table), n), dtype=bool)
        for i, sp in enumerate(table):
            for j, (o, p, mg) in enumerate(sp):
                op_tab[i, j], p_tab[i, j], m_tab[i, j], has[i, j] = names.index(o), p, mg, True
        op_id, prob, base, present = op_tab[sub], p_tab[sub], m_tab[sub], has[sub]
    applied = present & (rng.random((k, n)) <= prob)
    level, q, op_names, unparam = _timm_magnitudes(rng, cfg, names, op_id, base)
    blur_rand = op_names == "GaussianBlurRand"
    if blur_rand.any():  # gaussian_blur_rand: radius = random.uniform(0.1, 2.0 * clamp(level / 10, 0, 1))
        top = 2.0 * np.clip(level / 10.0, 0.0, 1.0)
        radius = 0.1 + (top - 0.1) * rng.random((k, n))
        q = np.where(blur_rand, np.round(radius * FAM.BLUR_RAND_SCALE).astype(np.int64), q)
    q = np.where(unparam | ~applied, 0, q)
    out["ra_op"] = np.where(applied, op_id, 0)
    out["ra_mag"] = q
    if "ra_interp" in out.dtype.names:  # timm's _RANDOM_INTERPOLATION = (BILINEAR, BICUBIC)
        geometric = np.isin(op_names, list(FAM.TIMM_GEOMETRIC)) & applied
        choice = rng.integers(0, 2, size=(k, n)) + FAM.INTERP_CODES["bilinear"]
        out["ra_interp"] = np.where(geometric, choice, 0)


def quantise_weights(values: np.ndarray, total: int = FAM.AUGMIX_ONE) -> np.ndarray:
    """Non-negative weights [k, n] (each row summing to 1) as integers summing exactly to ``total`` per row:
    each floored, the rest handed one by one to the largest remainders (the first of equal ones)."""
    scaled = np.asarray(values, dtype=np.float64) * total
    q = np.floor(scaled).astype(np.int64)
    short = total - q.sum(axis=1)
    order = np.argsort(-(scaled - q), axis=1, kind="stable")
    rank = np.empty_like(order)
    np.put_along_axis(rank, order, np.arange(q.shape[1])[None, :].repeat(q.shape[0], axis=0), axis=1)
    return q + (rank < short[:, None])


def augmix(rng, k: int, policy, out: np.ndarray) -> None:
    """AugMix (format version 5): per view, Dirichlet(alpha) chain weights and a Beta(alpha, alpha) blend with
    the crop; per chain a depth (the fixed one, or uniform in 1..3) and that many ops drawn uniformly with
    replacement, each with its magnitude as the library draws it (torchvision: a bin uniform in
    0..severity-1 and a random sign for signed ops; timm: AugmentOp's level noise, clip and random negation,
    and the geometric ops' interpolation when random). Slots beyond a chain's depth hold Identity (op 0).

    Weights are stored in Q15 (:func:`quantise_weights`): timm's chain weights sum to 2^15 and the last value
    is the crop's weight 1 - m (m its blend factor, rounded); torchvision's chain weights (Dirichlet times
    the Beta's second share) and the crop's weight (the first share) sum to 2^15 together."""
    w, d = policy.augmix_width, policy.augmix_slots
    alpha = policy.augmix_alpha
    chain = rng.dirichlet([alpha] * w, size=k)
    m = rng.beta(alpha, alpha, size=k)  # timm: the mix's blend factor; torchvision: the crop's share
    if policy.augmix_depth > 0:
        depth = np.full((k, w), policy.augmix_depth)
    else:
        depth = rng.integers(1, 4, size=(k, w))
    used = np.arange(d)[None, None, :] < depth[:, :, None]  # [k, w, d]
    names = policy.augmix_ops
    if policy.augmix == "torchvision":
        count = len(names) - 1 if policy.augmix_all_ops else FAM.AUGMIX_BASIC_OPS
        ops = rng.integers(1, count + 1, size=(k, w, d))
        bins = rng.integers(0, policy.augmix_severity, size=(k, w, d))
        negative = rng.random((k, w, d)) < 0.5
        mag = signed_bins(names, ops, bins, negative, FAM.TV_SIGNED, FAM.TV_UNPARAMETERISED)
        weights = quantise_weights(np.concatenate([chain * (1.0 - m)[:, None], m[:, None]], axis=1))
    else:
        cfg = FAM.parse_config(policy.augmix_config)
        ops = rng.integers(1, len(names), size=(k, w, d))
        base = np.array([0.0] + [e[2] for e in cfg["ops"]])[ops]
        _, mag, op_names, unparam = _timm_magnitudes(rng, cfg, names, ops, base)
        mag = np.where(unparam, 0, mag)
        if "am_interp" in out.dtype.names:  # timm's _RANDOM_INTERPOLATION = (BILINEAR, BICUBIC)
            geometric = np.isin(op_names, list(FAM.TIMM_GEOMETRIC)) & used
            choice = rng.integers(0, 2, size=(k, w, d)) + FAM.INTERP_CODES["bilinear"]
            out["am_interp"] = np.where(geometric, choice, 0).reshape(k, w * d)
        mix = np.round(m * FAM.AUGMIX_ONE).astype(np.int64)
        weights = np.concatenate([quantise_weights(chain), (FAM.AUGMIX_ONE - mix)[:, None]], axis=1)
    out["am_op"] = np.where(used, ops, 0).reshape(k, w * d)
    out["am_mag"] = np.where(used, mag, 0).reshape(k, w * d)
    out["am_weight"] = weights
