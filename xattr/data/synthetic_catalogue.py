"""A synthetic product catalogue whose price drivers are known exactly.

Each listing describes a laptop-like product by brand, category, CPU tier, RAM, storage, screen
size, condition, colour and some marketing filler, with the phrases in a random order and joined
by a random separator. The natural-log price is a known additive function of a few attributes::

    log(price) = base_log_price + sum(effect of each attribute level present) + N(0, noise_sd)

Only the levels listed in :data:`PRICE_DRIVERS` move the price; each is a single
whitespace-delimited word that occurs in a text exactly when the listing has that level, so the
true price drivers of every text are known. Reference levels (``Dell``/``HP``/``Lenovo``/``Asus``,
``laptop``, ``i3``, ``8GB`` RAM, ``256GB`` storage, ``new``), the screen size, the colour and the
filler phrases have no effect on price.

Example:
    >>> catalogue = generate_catalogue(n=5, seed=0)
    >>> list(catalogue.frame.columns)[:5]
    ['doc_id', 'text', 'price', 'brand', 'category']
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from numbers import Integral

import numpy as np
import pandas as pd

__all__ = [
    "BASE_LOG_PRICE",
    "DEFAULT_NOISE_SD",
    "PRICE_DRIVERS",
    "PriceDriver",
    "SyntheticCatalogue",
    "expected_log_price",
    "generate_catalogue",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class PriceDriver:
    """One attribute level that moves the price of a synthetic listing.

    Attributes:
        word: The single whitespace-delimited word that marks the level in a text (e.g. ``"i9"``,
            ``"32GB"``, ``"refurbished"``, ``"Apple"``). It occurs in a text exactly when the
            listing has this level.
        attribute: The attribute the level belongs to (``"brand"``, ``"category"``, ``"cpu"``,
            ``"ram"``, ``"storage"`` or ``"condition"``).
        effect: Additive effect on natural-log price relative to the attribute's reference level
            (``exp(effect) - 1`` is the relative price change).
    """

    word: str
    attribute: str
    effect: float


@dataclass(frozen=True)
class SyntheticCatalogue:
    """A generated catalogue and the function that priced it.

    Attributes:
        frame: One row per listing, with columns ``doc_id`` (str, unique, ``"item-00000"``),
            ``text`` (str), ``price`` (float, > 0, rounded to cents), ``brand``, ``category``,
            ``cpu``, ``ram``, ``storage``, ``screen``, ``condition``, ``colour`` (str: the
            attribute levels of the listing) and ``expected_log_price`` (float: the noise-free
            log price, ``base_log_price`` plus the effects of the drivers present).
        drivers: Every attribute level with a non-zero effect on log price.
        base_log_price: Log price of a listing at every reference level.
        noise_sd: Standard deviation of the Gaussian noise added to log price.
    """

    frame: pd.DataFrame
    drivers: tuple[PriceDriver, ...]
    base_log_price: float
    noise_sd: float


#: Log price (about $400) of a new Dell/HP/Lenovo/Asus i3 laptop with 8GB RAM and a 256GB SSD.
BASE_LOG_PRICE: float = 6.0
#: Default noise on log price: about +-10% on price, small next to the drivers' spread.
DEFAULT_NOISE_SD: float = 0.1

#: The true price drivers. Every other word of a text has no effect on price.
PRICE_DRIVERS: tuple[PriceDriver, ...] = (
    PriceDriver("Apple", "brand", 0.40),
    PriceDriver("Acer", "brand", -0.20),
    PriceDriver("chromebook", "category", -0.40),
    PriceDriver("workstation", "category", 0.35),
    PriceDriver("i5", "cpu", 0.25),
    PriceDriver("i7", "cpu", 0.50),
    PriceDriver("i9", "cpu", 0.80),
    PriceDriver("16GB", "ram", 0.20),
    PriceDriver("32GB", "ram", 0.45),
    PriceDriver("512GB", "storage", 0.15),
    PriceDriver("1TB", "storage", 0.30),
    PriceDriver("refurbished", "condition", -0.30),
    PriceDriver("used", "condition", -0.50),
)

# Attribute levels and their sampling probabilities (None: uniform). The first level listed of
# each priced attribute is not necessarily the reference; the reference levels are those absent
# from PRICE_DRIVERS.
_BRANDS: tuple[str, ...] = ("Dell", "HP", "Lenovo", "Asus", "Acer", "Apple")
_CATEGORIES: tuple[str, ...] = ("laptop", "chromebook", "workstation")
_CATEGORY_P: tuple[float, ...] = (0.6, 0.25, 0.15)
_CPUS: tuple[str, ...] = ("i3", "i5", "i7", "i9")
_RAMS: tuple[str, ...] = ("8GB", "16GB", "32GB")
_STORAGES: tuple[str, ...] = ("256GB", "512GB", "1TB")
_SCREENS: tuple[str, ...] = ("13.3", "14", "15.6", "17.3")
_CONDITIONS: tuple[str, ...] = ("new", "refurbished", "used")
_CONDITION_P: tuple[float, ...] = (0.55, 0.28, 0.17)
_COLOURS: tuple[str, ...] = ("black", "silver", "grey", "blue", "white")

# Phrase templates per attribute; "{}" is the level's word. No template contains another
# attribute's word, so a driver word occurs in a text only through its own attribute.
_CPU_TEMPLATES: tuple[str, ...] = ("Intel Core {}", "Core {}", "{} processor", "{} CPU")
_RAM_TEMPLATES: tuple[str, ...] = ("{} RAM", "{} memory", "RAM {}")
_STORAGE_TEMPLATES: tuple[str, ...] = ("{} SSD", "SSD {}", "{} storage")
_SCREEN_TEMPLATES: tuple[str, ...] = ("{} inch", "{} inch screen")
_CONDITION_TEMPLATES: dict[str, tuple[str, ...]] = {
    "new": ("new", "new in box", "condition new"),
    "refurbished": ("refurbished", "certified refurbished", "condition refurbished"),
    "used": ("used", "lightly used", "condition used"),
}
_COLOUR_TEMPLATES: tuple[str, ...] = ("{}", "{} finish", "colour {}")
_FILLERS: tuple[str, ...] = (
    "fast shipping",
    "great deal",
    "lightweight",
    "backlit keyboard",
    "free returns",
    "ships today",
    "sleek design",
    "limited stock",
    "ideal for students",
    "top rated",
    "WiFi 6",
    "long battery life",
)
_SEPARATORS: tuple[str, ...] = (" ", " ", " ", " - ", " , ")


def expected_log_price(
    text: str,
    drivers: tuple[PriceDriver, ...] = PRICE_DRIVERS,
    base_log_price: float = BASE_LOG_PRICE,
) -> float:
    """The noise-free log price of a listing: the documented pricing function.

    Args:
        text: A listing generated by :func:`generate_catalogue`.
        drivers: The drivers that priced it (``SyntheticCatalogue.drivers``).
        base_log_price: Log price at every reference level (``SyntheticCatalogue.base_log_price``).

    Returns:
        ``base_log_price`` plus the effect of every driver whose word is one of the text's
        whitespace-delimited words.
    """
    words = set(text.split())
    return base_log_price + math.fsum(d.effect for d in drivers if d.word in words)


def _render_listing(
    rng: np.random.Generator,
    *,
    brand: str,
    category: str,
    cpu: str,
    ram: str,
    storage: str,
    screen: str,
    condition: str,
    colour: str,
) -> str:
    """Render one listing's attributes as a short text with a random template and order."""

    def pick(options: tuple[str, ...]) -> str:
        return options[int(rng.integers(len(options)))]

    head = f"{brand} {category}" if rng.random() < 0.7 else f"{category} by {brand}"
    phrases = [
        pick(_CPU_TEMPLATES).format(cpu),
        pick(_RAM_TEMPLATES).format(ram),
        pick(_STORAGE_TEMPLATES).format(storage),
        pick(_SCREEN_TEMPLATES).format(screen),
        pick(_CONDITION_TEMPLATES[condition]),
        pick(_COLOUR_TEMPLATES).format(colour),
    ]
    n_fillers = int(rng.choice(3, p=(0.4, 0.4, 0.2)))
    phrases.extend(_FILLERS[i] for i in rng.choice(len(_FILLERS), size=n_fillers, replace=False))
    order = rng.permutation(len(phrases))
    body = [phrases[i] for i in order]
    # The brand/category phrase leads most listings but may sit anywhere.
    position = 0 if rng.random() < 0.6 else int(rng.integers(0, len(body) + 1))
    body.insert(position, head)
    return pick(_SEPARATORS).join(body)


def generate_catalogue(n: int = 3000, seed: int = 0, *, noise_sd: float = DEFAULT_NOISE_SD) -> SyntheticCatalogue:
    """Generate a synthetic catalogue of laptop-like listings with known price drivers.

    Attribute levels are drawn independently of each other, so every driver's effect can be
    identified. The same ``n``, ``seed`` and ``noise_sd`` always give the same catalogue, and
    the first ``m`` rows do not depend on ``n`` for ``m <= n``.

    Args:
        n: Number of listings, at least 1.
        seed: Seed of the ``numpy.random.Generator`` that draws everything.
        noise_sd: Standard deviation of the Gaussian noise on log price; 0 makes
            ``log(price)`` equal :func:`expected_log_price` up to rounding to cents.

    Returns:
        The catalogue, with :data:`PRICE_DRIVERS`, :data:`BASE_LOG_PRICE` and ``noise_sd``.

    Raises:
        TypeError: If ``n`` or ``seed`` is not an integer.
        ValueError: If ``n < 1`` or ``noise_sd`` is negative or not finite.
    """
    if isinstance(n, bool) or not isinstance(n, Integral):
        raise TypeError(f"n must be an integer, got {type(n).__name__}")
    if n < 1:
        raise ValueError(f"n must be at least 1 (the number of listings), got {n}")
    if isinstance(seed, bool) or not isinstance(seed, Integral):
        raise TypeError(f"seed must be an integer, got {type(seed).__name__}")
    if not math.isfinite(noise_sd) or noise_sd < 0:
        raise ValueError(f"noise_sd must be finite and >= 0, got {noise_sd}")

    rng = np.random.default_rng(seed)
    rows: list[dict[str, object]] = []
    for i in range(int(n)):
        levels = {
            "brand": _BRANDS[int(rng.integers(len(_BRANDS)))],
            "category": _CATEGORIES[int(rng.choice(len(_CATEGORIES), p=_CATEGORY_P))],
            "cpu": _CPUS[int(rng.integers(len(_CPUS)))],
            "ram": _RAMS[int(rng.integers(len(_RAMS)))],
            "storage": _STORAGES[int(rng.integers(len(_STORAGES)))],
            "screen": _SCREENS[int(rng.integers(len(_SCREENS)))],
            "condition": _CONDITIONS[int(rng.choice(len(_CONDITIONS), p=_CONDITION_P))],
            "colour": _COLOURS[int(rng.integers(len(_COLOURS)))],
        }
        text = _render_listing(rng, **levels)
        mean_log_price = BASE_LOG_PRICE + math.fsum(d.effect for d in PRICE_DRIVERS if levels[d.attribute] == d.word)
        # Always draw the noise so the texts do not depend on noise_sd.
        log_price = mean_log_price + noise_sd * float(rng.standard_normal())
        rows.append(
            {
                "doc_id": f"item-{i:05d}",
                "text": text,
                "price": round(math.exp(log_price), 2),
                **levels,
                "expected_log_price": mean_log_price,
            }
        )

    frame = pd.DataFrame(
        rows,
        columns=[
            "doc_id",
            "text",
            "price",
            "brand",
            "category",
            "cpu",
            "ram",
            "storage",
            "screen",
            "condition",
            "colour",
            "expected_log_price",
        ],
    )
    frame = frame.astype({"price": "float64", "expected_log_price": "float64"})
    logger.debug("generated %d synthetic listings (seed=%d, noise_sd=%g)", n, seed, noise_sd)
    return SyntheticCatalogue(
        frame=frame,
        drivers=PRICE_DRIVERS,
        base_log_price=BASE_LOG_PRICE,
        noise_sd=float(noise_sd),
    )
