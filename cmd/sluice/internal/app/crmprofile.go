package app

import (
	"sluice.dev/crmsim"
	"sluice.dev/inbound"
)

// DemoCRMSecret signs the simulator's bare-records webhooks when no
// inbound source is configured. It is public: never use it with a real CRM.
const DemoCRMSecret = "sluice-demo-crm-secret"

// bareRecordsSource is the inbound source of a CRM that posts bare records
// (crmsim's bare-records webhook profile, the CRM of issue 13): the
// signature is base64("<webhook id>:" + raw HMAC-SHA256 of the body), the
// body a JSON array of lead records with only the changed fields, no type,
// no version, no delivery id (dedupe ids are content hashes). The records
// are the sample catalog's lead_record type.
func bareRecordsSource(w crmsim.WebhookConfig) inbound.Source {
	return inbound.Source{
		Name: "crm", Scheme: inbound.SchemeHMAC, Secrets: []string{w.Secret},
		Signature: inbound.Signature{Header: crmsim.HeaderCRMSignature, Encoding: "base64",
			Embed: "{header:" + crmsim.HeaderCRMWebhookID + "}:{mac}"},
		Envelope: &inbound.Envelope{Items: ".[]", Type: `"lead_record"`},
	}
}
