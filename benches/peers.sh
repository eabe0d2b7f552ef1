# The peers' configurations, one place for benches/e2e.sh and benches/syscalls.sh (sourced, not run).
#
#   nginx_conf DIR PORT UPSTREAM_PORT CERTS LOG        writes DIR/nginx.conf (and makes DIR/tmp)
#   haproxy_conf DIR PORT UPSTREAM_PORT CERTS LOG [STATS_PORT]
#                                                      writes DIR/haproxy.cfg and DIR/server.pem
#
# CERTS holds server.pem, server-key.pem and ca.pem (`meshgate certs dev`); LOG=1 writes an access log line per
# request (nginx: DIR/access.log; HAProxy: to stdout, which the caller sends to a file), LOG=0 none. Both proxy
# to 127.0.0.1:UPSTREAM_PORT with kept-alive upstream connections, require client certificates, offer h2 and
# HTTP/1.1 by ALPN and add roughly the headers meshgate adds, so that each does comparable work per request.

nginx_conf() {
  local dir=$1 port=$2 up=$3 certs=$4 access="access_log off;"
  [[ $5 == 1 ]] && access="access_log $dir/access.log;"
  mkdir -p "$dir/tmp"
  cat >"$dir/nginx.conf" <<EOF
worker_processes 1; daemon off; master_process on; pid $dir/nginx.pid; error_log $dir/error.log warn;
events { worker_connections 4096; }
http {
  $access
  client_body_temp_path $dir/tmp/body; proxy_temp_path $dir/tmp/proxy; fastcgi_temp_path $dir/tmp/fastcgi;
  uwsgi_temp_path $dir/tmp/uwsgi; scgi_temp_path $dir/tmp/scgi;
  keepalive_requests 1000000;  # the default (1000) would recycle oha's connections; meshgate has no such cap
  upstream app { server 127.0.0.1:$up; keepalive 64; keepalive_requests 1000000; }
  server {
    listen 127.0.0.1:$port ssl http2;  # nginx 1.22 (bookworm): http2 is a listen parameter
    ssl_certificate $certs/server.pem; ssl_certificate_key $certs/server-key.pem;
    ssl_client_certificate $certs/ca.pem; ssl_verify_client on; ssl_protocols TLSv1.2 TLSv1.3;
    location / {
      proxy_pass http://app; proxy_http_version 1.1; proxy_set_header Connection "";
      proxy_set_header X-Forwarded-Proto https; proxy_set_header X-Forwarded-For \$remote_addr;
      proxy_set_header X-Request-Id \$request_id;
      proxy_set_header X-Forwarded-Client-Cert "Hash=\$ssl_client_fingerprint;Subject=\"\$ssl_client_s_dn\"";
    }
  }
}
EOF
}

# One thread (as nginx has one worker and meshgate one), upstream connections kept and shared (http-reuse
# always). With STATS_PORT, a stats listener there (plain HTTP) gives the response counters.
haproxy_conf() {
  local dir=$1 port=$2 up=$3 certs=$4 log="    no log" stats=""
  [[ $5 == 1 ]] && log="    log stdout format raw local0 info
    option httplog"
  [[ -n ${6:-} ]] && stats="listen stats
    bind 127.0.0.1:$6
    no log
    stats enable
    stats uri /stats"
  mkdir -p "$dir"; cat "$certs/server.pem" "$certs/server-key.pem" >"$dir/server.pem"
  cat >"$dir/haproxy.cfg" <<EOF
global
    nbthread 1
    maxconn 8192
    ssl-default-bind-options ssl-min-ver TLSv1.2
defaults
    mode http
$log
    timeout connect 5s
    timeout client 60s
    timeout server 60s
    timeout http-keep-alive 60s
frontend fe
    bind 127.0.0.1:$port ssl crt $dir/server.pem ca-file $certs/ca.pem verify required alpn h2,http/1.1
    option forwardfor
    http-request set-header X-Forwarded-Proto https
    http-request set-header X-Request-Id %[uuid]
    http-request set-header X-Forwarded-Client-Cert "Hash=%[ssl_c_sha1,hex];Subject=\"%[ssl_c_s_dn]\""
    default_backend app
backend app
    http-reuse always
    server up 127.0.0.1:$up
$stats
EOF
}
