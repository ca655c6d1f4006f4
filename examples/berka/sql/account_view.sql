-- Accounts with their branch's district and region and the owner (every account has exactly one
-- OWNER disposition). Frequencies translated from Czech.
SELECT
  a.account_id,
  a.opened_on,
  CASE a.frequency
    WHEN 'POPLATEK MESICNE' THEN 'monthly'
    WHEN 'POPLATEK TYDNE' THEN 'weekly'
    WHEN 'POPLATEK PO OBRATU' THEN 'after each transaction'
    ELSE a.frequency
  END AS frequency,
  a.district_id,
  d.district_name,
  d.region,
  c.client_id AS owner_id,
  -- birth_number is YYMMDD, with 50 added to the month for women.
  CASE WHEN CAST(substr(c.birth_number, 3, 2) AS INT) > 50 THEN 'F' ELSE 'M' END AS owner_sex,
  1900 + CAST(substr(c.birth_number, 1, 2) AS INT) AS owner_birth_year
FROM account_file a
JOIN district d ON d.district_id = a.district_id
JOIN disp o ON o.account_id = a.account_id AND o.type = 'OWNER'
JOIN client_file c ON c.client_id = o.client_id
