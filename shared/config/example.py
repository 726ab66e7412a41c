"""An example configuration file (the format is documented in ``load.py``).

Kept as a string constant, not a ``.toml`` file, so it ships with the package without
package-data settings; ``sunbeam-ctl`` can print it for ``config example``.
"""

EXAMPLE_TOML = '''\
# sunbeam configuration: ~/.config/sunbeam/config.toml (or $SUNBEAM_CONFIG)
default_context = "home"

[contexts.home]
control_url = "https://headscale.example.com"     # required, http:// or https://
auth_key_file = "~/.config/sunbeam/home.key"      # chmod 600; or auth_key = "..." (not both)
hostname = "laptop"                                # DNS label; default: this machine's name
state_dir = "~/.local/state/sunbeam/home"          # default: $XDG_STATE_HOME/sunbeam/<context>
ephemeral = false
wg_workers = 2                                     # 1..64
log_level = "info"                                 # debug | info | warning | error
capability_version = 130                           # >= 113 (Headscale 0.29 minimum)
# ca_file = "~/.config/sunbeam/home-ca.pem"      # a CA to trust besides the system's (https)
accept_routes = false                              # use peers' subnet routes (--accept-routes)
# exit_node = "gateway"                          # peer name or IP for non-tailnet traffic
dns_forward = false                                # dns listener: forward other names

[[contexts.home.listeners]]
kind = "socks5"                # socks5 | http | forward | inbound | dns
listen = "127.0.0.1:1080"      # host:port, IPv6 as [::1]:1080

[[contexts.home.listeners]]
kind = "forward"               # local port -> a tailnet peer
listen = "127.0.0.1:16579"
target = "peer-a:80"           # name or IP + port

[[contexts.home.listeners]]
kind = "dns"                   # tailnet names over DNS (UDP and TCP): dig @127.0.0.1 -p 5353
listen = "127.0.0.1:5353"

[[contexts.home.listeners]]
kind = "inbound"               # tailnet peers -> port 22 on our tailnet address -> local
port = 22
target = "127.0.0.1:22"
'''
