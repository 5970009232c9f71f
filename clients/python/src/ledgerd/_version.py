"""The version of the ledgerd client (internal; read it as ``ledgerd.__version__``).

One version covers ledgerd and its three clients; ``make set-version``
rewrites this line with the others, and a test checks that they agree.
"""

__version__ = "0.1.0"

#: The user agent the client sends with every call (gRPC puts it before its own).
USER_AGENT = f"ledgerd-python/{__version__}"
