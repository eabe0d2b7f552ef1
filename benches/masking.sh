# The field rule of the masked benchmarks, one place for benches/e2e.sh (MASK=1: meshgate+m),
# benches/callgrind.sh (MASK=1) and benches/syscalls.sh (MASKED=...) (sourced, not run).
#
#   masking_config DIR CONFIG [KEY]
#
# writes DIR/mask/bench-fields.cedar, a sales-domain forbid of `read_field` on the personal fields of the
# orders for the bench client (spiffe://mesh.local/ns/finance/sa/reporting), so that every GET /orders of the
# sample upstream is masked by its field plan (customer_email pseudonymised, customer_phone cut to its last
# four), and DIR/key/hash.key (KEY, or 48 random bytes in base64); then adds the rule's directory to the
# `sources:` line of the meshgate configuration CONFIG and the key as `fields.hash_key_file`. Returns 1, saying
# why, when CONFIG has no one-line `sources: [...]` to extend. The key sits in a directory of its own, as a
# Secret volume holds it: the sidecar watches the key through its directory, and the audit logs written beside
# it would wake the watcher at every write.

masking_config() {
  local dir=$1 config=$2
  mkdir -p "$dir/mask" "$dir/key"
  cat >"$dir/mask/bench-fields.cedar" <<'CEDAR'
@id("sales.bench.orders.personal-fields-masked-for-reporting")
forbid (
  principal == Mesh::Service::"spiffe://mesh.local/ns/finance/sa/reporting",
  action == Mesh::Action::"read_field",
  resource in Mesh::Dataset::"sales.orders/orders"
)
when { resource.pii };
CEDAR
  if [[ -n ${3:-} ]]; then printf '%s' "$3" >"$dir/key/hash.key"
  else head -c 48 /dev/urandom | base64 -w0 >"$dir/key/hash.key"; fi
  sed -i "s|^  sources: \\[\\(.*\\)\\]$|  sources: [\\1, { path: $dir/mask, domain: sales }]|" "$config"
  grep -q "$dir/mask" "$config" || { echo "$config: no one-line sources: [...] to add the field rule to" >&2; return 1; }
  echo "fields: { hash_key_file: $dir/key/hash.key }" >>"$config"
}
