#!/usr/bin/env bash
# Sets up a BIND9 server that accepts dynamic updates (RFC 2136) signed with
# a TSIG key, for Hearth's ddns app: writes named.conf, the zone and the key
# into DIR, and prints the settings for the Caddyfile beside this script.
#
#   examples/ddns/setup-bind.sh DIR [ZONE] [PORT]
#   named -g -c DIR/named.conf        # run it (as root, or as the bind user)
#
# ZONE defaults to example.test and PORT to 5353 (loopback only: to serve
# the zone to the internet, change listen-on and open port 53).
set -euo pipefail
dir=${1:?usage: setup-bind.sh DIR [ZONE] [PORT]}
zone=${2:-example.test}
port=${3:-5353}
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
secret=$(head -c 32 /dev/urandom | base64)
umask 077
cat >"$dir/zone" <<ZONE
\$TTL 300
@   IN SOA ns.$zone. admin.$zone. ( 1 3600 600 86400 300 )
@   IN NS  ns.$zone.
ns  IN A   127.0.0.1
ZONE
cat >"$dir/named.conf" <<CONF
options {
	directory "$dir";
	pid-file "$dir/named.pid";
	listen-on port $port { 127.0.0.1; };
	listen-on-v6 { none; };
	recursion no;
	notify no;
};
controls { };
key "hearth-ddns." {
	algorithm hmac-sha256;
	secret "$secret";
};
zone "$zone" {
	type primary;
	file "$dir/zone";
	allow-update { key "hearth-ddns."; };   // only holders of the key may update
	allow-transfer { key "hearth-ddns."; }; // lets Hearth read the records back
};
CONF
printf 'DDNS_TSIG_KEY=%s\n' "$secret" >"$dir/ddns.env"
cat <<DONE
BIND is configured in $dir. Start it with:
  named -g -c $dir/named.conf
Then run Caddy with the key in its environment (never in the Caddyfile):
  set -a; . $dir/ddns.env; set +a
  DDNS_ZONE=$zone DDNS_SERVER=127.0.0.1:$port bin/caddy run --config examples/ddns/Caddyfile
DONE
