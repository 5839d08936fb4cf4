from services.reviews.app import main

main()
