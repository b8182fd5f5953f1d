package topology

import (
	"encoding/base64"
	"strings"

	"github.com/nats-io/nats.go/jetstream"
)

// ParkedKeysBucket is the KV bucket of keys whose events a stage parks
// (per-key poison isolation): "<stream_prefix lower>_parked_keys".
func (n Names) ParkedKeysBucket() string {
	return strings.ToLower(n.c.StreamPrefix) + "_parked_keys"
}

// ParkedKeysConfig is the config of the parked-keys bucket. Each entry is
// keyed by ParkedKeyName and holds the JSON state of one parked key; the
// lane runners watch it, the operator's commands change it.
func (n Names) ParkedKeysConfig() jetstream.KeyValueConfig {
	return jetstream.KeyValueConfig{
		Bucket:      n.ParkedKeysBucket(),
		Description: "Sluice parked keys (later events wait behind)",
		History:     5,
		Storage:     n.storage(),
		Replicas:    n.c.Replicas,
	}
}

// ParkedKeyName is the KV key of key token tok parked at stage. base64url
// keeps it within the KV key charset whatever the token holds.
func ParkedKeyName(stage Stage, keyToken string) string {
	return string(stage) + "." + base64.RawURLEncoding.EncodeToString([]byte(keyToken))
}

// AuditSubject is where operator actions of a kind ("parked") are recorded.
func (n Names) AuditSubject(kind string) string { return n.c.Prefix + ".audit." + kind }

// ParkedKeyFilter matches the parked messages of key token tok at stage,
// whatever their type.
func (n Names) ParkedKeyFilter(stage Stage, keyToken string) string {
	return n.c.Prefix + ".parked." + string(stage) + ".*." + keyToken
}
