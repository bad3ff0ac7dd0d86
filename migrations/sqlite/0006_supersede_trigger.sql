-- A newer certificate of the same lineage supersedes older ones, inside the INSERT itself: a batch
-- of issued certificates is then one atomic statement (no BEGIN/UPDATE/COMMIT round trips).
CREATE TRIGGER certificates_supersede AFTER INSERT ON certificates
WHEN NEW.lineage IS NOT NULL
BEGIN
    UPDATE certificates SET superseded_at = NEW.created_at
    WHERE lineage = NEW.lineage AND superseded_at IS NULL AND id < NEW.id;
END;
