-- One row per product a customer holds at a month end: deposits, wealth (AUM beyond deposits)
-- and each loan product with a balance. Products per customer = holdings / holders.
SELECT customer_id, month_end, 'deposit' AS product
FROM customer_month_snapshots
WHERE deposit_balance > 0
UNION ALL
SELECT customer_id, month_end, 'wealth' AS product
FROM customer_month_snapshots
WHERE aum - deposit_balance > 0
UNION ALL
SELECT DISTINCT lm.customer_id, lm.month_end, l.product
FROM loan_month lm
JOIN loans l ON lm.loan_id = l.loan_id
WHERE lm.balance > 0
