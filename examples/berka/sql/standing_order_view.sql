-- Standing payment orders with their purpose (k_symbol) translated; a single space means not
-- stated.
SELECT
  o.order_id,
  o.account_id,
  o.bank_to,
  o.amount,
  CASE trim(o.k_symbol)
    WHEN 'POJISTNE' THEN 'insurance'
    WHEN 'SIPO' THEN 'household'
    WHEN 'LEASING' THEN 'leasing'
    WHEN 'UVER' THEN 'loan instalment'
    WHEN '' THEN 'not stated'
    ELSE o.k_symbol
  END AS purpose
FROM order_file o
