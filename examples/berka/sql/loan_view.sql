-- Loans with their status spelt out: A and B are finished contracts, C and D running ones; B (not
-- paid back) and D (client in debt) are the bad loans.
SELECT
  l.loan_id,
  l.account_id,
  l.granted_on,
  l.amount,
  l.duration,
  l.payments,
  l.status,
  CASE l.status
    WHEN 'A' THEN 'A: finished, paid back'
    WHEN 'B' THEN 'B: finished, not paid back'
    WHEN 'C' THEN 'C: running, on time'
    WHEN 'D' THEN 'D: running, in debt'
  END AS status_label,
  CASE WHEN l.status IN ('A', 'B') THEN 'finished' ELSE 'running' END AS contract,
  l.status IN ('B', 'D') AS is_bad
FROM loan_file l
