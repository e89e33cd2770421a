"""Our networks in their authors' layouts: the key maps that turn one of our state dicts into
the state dict of the authors' module at the same configuration, and back.

``keymap.py`` holds the pieces a map is made of, ``openaimodel.py`` and ``autoencoder.py`` the
maps of the shared networks (LDM's U-Nets, its VQ autoencoder), ``layouts.py`` which network of
which method maps onto which authors' module. ``manifests/`` records each authors' module's
key names and shapes, taken once from their code (``benchmarks/parity.py --manifests``), so
that a test checks every map without the authors' code at hand.
"""
