"""``python -m cdb.testing.fake_binance``: a fake Binance fed by the synthetic market."""

from cdb.testing.fake_binance.server import main

main()
