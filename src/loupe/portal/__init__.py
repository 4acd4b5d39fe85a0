"""loupe-portal: loupe's own pages and API behind the sign-in gateway.

Who is asking comes only from the OIDC ID token the gateway passes in `Authorization`
(verified here against the issuer's keys); what they may do comes from its `groups` claim.
"""
