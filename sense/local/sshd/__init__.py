"""SSH into the dashboards of the local backend (asyncssh, from the ``local`` extra).

- ``server``: the SSH server, in a thread of its own, started and stopped by ``LocalServer``;
- ``access``: the port and each dashboard's password (standard library only);
- ``throttle``: the back-off after failed logins;
- ``hostkey``: the host key kept in ``.sense/ssh_host_key``;
- ``session`` and ``reaper``: a session's command, and the process that ends all it started.
"""
