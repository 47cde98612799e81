#!/bin/sh
# Certificates for healer talking to Docker engines over TLS (docs/multi-host.md).
#
#   make-certs.sh DIR HOST [IP]
#
# makes, in DIR, whatever is not there yet:
#   ca.pem, ca-key.pem            the CA (keep ca-key.pem offline; it signs the others)
#   healer/cert.pem, key.pem      healer's client certificate (docker.engines.*.cert_file)
#   HOST/server-cert.pem,
#   HOST/server-key.pem           the engine's (or its TLS proxy's) server certificate,
#                                 valid for the name HOST (and the address IP, if given)
# Run it once per host. Keys are EC P-256, readable by their owner only.
set -eu

[ $# -ge 2 ] || { echo "usage: $0 DIR HOST [IP]" >&2; exit 2; }
dir=$1
host=$2
ip=${3:-}
umask 077
mkdir -p "$dir"
cd "$dir"

key() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null; }

# sign CSR CERT EXTENSIONS: a certificate from the CA, valid 825 days
sign() {
    printf '%s\n' "$3" > "$2.ext"
    openssl x509 -req -sha256 -days 825 -in "$1" -CA ca.pem -CAkey ca-key.pem \
        -CAcreateserial -extfile "$2.ext" -out "$2" 2>/dev/null
    rm -f "$1" "$2.ext"
}

if [ ! -f ca.pem ]; then
    key ca-key.pem
    openssl req -x509 -new -sha256 -days 3650 -key ca-key.pem -subj "/CN=healer docker CA" \
        -addext "basicConstraints=critical,CA:TRUE" \
        -addext "keyUsage=critical,keyCertSign,cRLSign" -out ca.pem
fi

if [ ! -f healer/cert.pem ]; then
    mkdir -p healer
    key healer/key.pem
    openssl req -new -key healer/key.pem -subj "/CN=healer" -out healer/cert.csr
    sign healer/cert.csr healer/cert.pem "extendedKeyUsage=clientAuth
keyUsage=critical,digitalSignature"
fi

mkdir -p "$host"
key "$host/server-key.pem"
openssl req -new -key "$host/server-key.pem" -subj "/CN=$host" -out "$host/server.csr"
san="DNS:$host"
[ -n "$ip" ] && san="$san,IP:$ip"
sign "$host/server.csr" "$host/server-cert.pem" "subjectAltName=$san
extendedKeyUsage=serverAuth
keyUsage=critical,digitalSignature"
chmod 0644 ca.pem healer/cert.pem "$host/server-cert.pem"
echo "$dir: ca.pem, healer/cert.pem + key.pem, $host/server-cert.pem + server-key.pem"
