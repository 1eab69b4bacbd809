"""``python -m cdb.chaos.proxy``: the proxy on its own."""

from cdb.chaos.proxy.standalone import main

main()
