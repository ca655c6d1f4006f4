-- Cards are issued to a disposition (a client's right on an account): the account they belong to
-- and whether the holder owns it.
SELECT
  c.card_id,
  c.card_type,
  c.issued_on,
  d.account_id,
  d.client_id,
  CASE d.type WHEN 'OWNER' THEN 'owner' ELSE 'disponent' END AS holder
FROM card_file c
JOIN disp d ON d.disp_id = c.disp_id
