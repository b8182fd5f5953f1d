package app

import (
	"io"
	"net/url"
	"strings"

	"gopkg.in/yaml.v3"

	"sluice.dev/mesh/redact"
)

// redactedValue replaces a secret in `sluice config print`.
const redactedValue = "<redacted>"

// configSecrets are config keys whose value is a secret although the name
// does not say so: the URL of a Slack or webhook alert sink carries its
// credential in the path.
var configSecrets = map[string]bool{"webhook_url": true}

// urlSecretParents: a "url" key under one of these sections is a secret.
var urlSecretParents = map[string]bool{"webhook": true, "slack": true}

// printConfig writes c as YAML with every secret replaced. The typed pass
// (redacted) knows the structure (CRM headers, DSNs, inbound secrets);
// the generic pass then hides the value of every key mesh/redact considers
// secret (token, password, secret, auth, api_key, ... as substrings, see
// mesh/redact) that holds a string or a list of strings, the alert sinks'
// URLs, and the password of any URL. Labels
// (a key "name" or ending in "_name", e.g. token_name) stay readable: they
// name a credential, they are not one.
func printConfig(w io.Writer, c Config) error {
	var doc yaml.Node
	if err := doc.Encode(redacted(c)); err != nil {
		return err
	}
	redactNode(&doc, "")
	return yaml.NewEncoder(w).Encode(&doc)
}

// redactNode walks a YAML tree; parent is the key of the enclosing
// mapping. A secret key's value is hidden when it is a string or a list of
// strings; a section under a secret-sounding key (inbound's signature
// settings) is walked key by key, so only its secrets are hidden.
func redactNode(n *yaml.Node, parent string) {
	switch n.Kind {
	case yaml.DocumentNode, yaml.SequenceNode:
		for _, c := range n.Content {
			redactNode(c, parent)
		}
	case yaml.MappingNode:
		for i := 0; i+1 < len(n.Content); i += 2 {
			name := n.Content[i].Value
			v := n.Content[i+1]
			switch {
			case name == "name" || strings.HasSuffix(name, "_name"):
				// a label names a credential, it is not one
			case redact.Default.Sensitive(name) || configSecrets[name] || (name == "url" && urlSecretParents[parent]):
				hide(v, name)
			default:
				redactNode(v, name)
			}
		}
	case yaml.ScalarNode:
		if strings.Contains(n.Value, "://") {
			n.Value = redactURLPassword(n.Value)
		}
	}
}

// hide replaces the non-empty strings of a secret's value (a string or a
// list of them); a section is walked by redactNode.
func hide(n *yaml.Node, name string) {
	switch n.Kind {
	case yaml.ScalarNode:
		if n.Value != "" && n.Tag == "!!str" {
			n.Value, n.Style = redactedValue, 0
		}
	case yaml.SequenceNode:
		for _, c := range n.Content {
			hide(c, name)
		}
	default:
		redactNode(n, name)
	}
}

// redactURLPassword masks the password of a URL (or of each of a
// comma-separated list) and leaves anything else as it is.
func redactURLPassword(s string) string {
	parts := strings.Split(s, ",")
	for i, p := range parts {
		u, err := url.Parse(strings.TrimSpace(p))
		if err != nil || u.User == nil {
			continue
		}
		if _, ok := u.User.Password(); ok {
			u.User = url.UserPassword(u.User.Username(), "redacted")
		} else {
			u.User = url.User("redacted") // a lone user part may be a token
		}
		parts[i] = u.String()
	}
	return strings.Join(parts, ",")
}
