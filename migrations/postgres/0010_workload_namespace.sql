-- The workload's namespace, where the certificate itself tells it (a SPIFFE ID's ns/<ns>, a
-- <service>.<namespace>.svc DNS name), beside the requester's namespace (`namespace`): cert-manager
-- asks for every team, so its own namespace says nothing about whose certificate it is.
ALTER TABLE certificates ADD COLUMN workload_namespace TEXT;
