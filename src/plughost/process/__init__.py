"""How a plugin process is started and spoken to: spawn, handshake, mTLS, attach.

Knows nothing of the manager: a backend is handed callbacks for exit and logs.
"""
